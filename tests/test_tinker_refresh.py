"""sail_completer_for_checkpoint / RefreshingSailCompleter: keeping the signed URL fresh."""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
from collections.abc import Iterator
from typing import Any

import pytest

from sail_lite.errors import SailArgumentError
from sail_lite.tinker import (
    AdapterConfigError,
    SignedUrlExpiredError,
    SignedUrlUnavailableError,
    TinkerCheckpointError,
    adapter_config_json,
    sail_completer_for_checkpoint,
)
from tinker_doubles import (
    API_KEY,
    SECRET_MARK,
    CheckpointStoreDouble,
    FakeClock,
    FakeInnerCompleter,
    NotFoundErrorDouble,
    ServerErrorDouble,
    Tinker020RestClientDouble,
    Tinker038RestClientDouble,
    TinkerServiceDouble,
)

EXTERNAL = "tinker://run-7:train:0/external_weights/step_000050"
SAMPLER = "tinker://run-7:train:0/sampler_weights/step_000050"
T0 = 1_900_000_000.0
ADAPTER = {"peft_type": "LORA", "r": 8, "lora_alpha": 16, "base_model_name_or_path": "moonshotai/Kimi-K2.6"}
KW = {"model": "moonshotai/Kimi-K2.6", "max_tokens": 64, "temperature": 0.7}


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.fixture(autouse=True)
def _reset_fake() -> Iterator[None]:
    FakeInnerCompleter.reset()
    yield
    FakeInnerCompleter.reset()


def _setup(
    *, lifetime: float | None = 600.0, rest_cls: type = Tinker038RestClientDouble, path: str = EXTERNAL
) -> tuple[FakeClock, CheckpointStoreDouble, Any]:
    clock = FakeClock(T0)
    store = CheckpointStoreDouble(clock=clock, url_lifetime_seconds=lifetime)
    store.checkpoints.add(path)
    return clock, store, rest_cls(store)


async def _make(rest: Any, clock: FakeClock | None, path: str = EXTERNAL, **kw: Any) -> Any:
    args: dict[str, Any] = {"adapter_config": ADAPTER, "completer_cls": FakeInnerCompleter, "clock": clock, **KW}
    args.update(kw)
    return await sail_completer_for_checkpoint(rest, path, **args)


def test_builds_inner_completer_with_signed_url_and_adapter_config() -> None:
    from tinker_cookbook.completers import TokenCompleter

    clock, store, rest = _setup()

    async def main() -> Any:
        comp = await _make(rest, clock, ttl_seconds=3600)
        out = await comp([1, 2], ["\n"])
        return comp, out

    comp, out = run(main())
    assert isinstance(comp, TokenCompleter)
    assert len(FakeInnerCompleter.instances) == 1
    inner = FakeInnerCompleter.instances[0]
    assert inner.kwargs == {
        **KW,
        "tinker_lora_signed_url": store_url(1),
        "adapter_config": {**ADAPTER, "task_type": "CAUSAL_LM"},
        "tinker_lora_name": EXTERNAL,
    }
    assert out == {"tokens": [1, 2, 3], "url": store_url(1), "max_tokens": None}
    assert inner.calls == [([1, 2], ["\n"], None)]
    assert store.ttls == {EXTERNAL: 3600}
    assert comp.checkpoint.expires_at == T0 + 600
    assert comp.refresh_count == 0
    # The adapter config the inner completer got serialises to what Sail expects.
    assert adapter_config_json(inner.kwargs["adapter_config"]) == (
        '{"base_model_name_or_path":"moonshotai/Kimi-K2.6","lora_alpha":16,"peft_type":"LORA","r":8,"task_type":"CAUSAL_LM"}'
    )


def store_url(n: int, path: str = EXTERNAL, filename: str = "adapter_model.safetensors") -> str:
    return f"https://storage.example.test/{path[len('tinker://'):]}/{filename}?sig={SECRET_MARK}{n}"


def test_refreshes_within_margin_and_not_before() -> None:
    clock, store, rest = _setup(lifetime=600)

    async def main() -> list[str]:
        comp = await _make(rest, clock, ttl_seconds=3600, refresh_margin_seconds=120)
        seen = []
        for advance in (0, 300, 179, 1, 10, 400, 69, 1):
            clock.advance(advance)
            out = await comp([1], [0])
            seen.append(out["url"])
        return seen

    seen = run(main())
    # Calls at T0+0, 300, 479, 480, 490, 890, 959, 960. Resolved at T0 (expires T0+600, refresh
    # due at T0+480); re-resolved at T0+480 (expires T0+1080, due T0+960); again at T0+960.
    # Each external-weights lookup signs two files, so the URL numbers go 1, 3, 5.
    assert seen == [store_url(1)] * 3 + [store_url(3)] * 4 + [store_url(5)]
    assert len(FakeInnerCompleter.instances) == 3
    # The TTL was set once, on the first resolution only.
    assert [name for name, _ in store.calls].count("set_checkpoint_ttl_from_tinker_path") == 1
    assert store.ttls == {EXTERNAL: 3600}


def test_concurrent_callers_share_one_refresh() -> None:
    clock, store, rest = _setup(lifetime=600)
    store.delay_seconds = 0.05

    async def main() -> list[Any]:
        comp = await _make(rest, clock)
        clock.advance(550)  # inside the 300 s margin
        return await asyncio.gather(*(comp([i], None) for i in range(50)))

    outs = run(main())
    assert store.url_calls() == ["get_external_weights_urls"] * 2  # initial + one refresh
    assert {o["url"] for o in outs} == {store_url(3)}
    assert len(FakeInnerCompleter.instances) == 2


def test_unknown_expiry_refreshes_after_assumed_lifetime() -> None:
    clock, store, rest = _setup(lifetime=None, rest_cls=Tinker020RestClientDouble, path=SAMPLER)

    async def main() -> list[str]:
        comp = await _make(rest, clock, path=SAMPLER, unknown_expiry_seconds=900, refresh_margin_seconds=300)
        urls = []
        for advance in (0, 599, 1):
            clock.advance(advance)
            urls.append((await comp([1], None))["url"])
        return urls

    urls = run(main())
    assert urls == [store_url(1, SAMPLER, "archive.tar")] * 2 + [store_url(2, SAMPLER, "archive.tar")]


def test_max_tokens_is_passed_through() -> None:
    clock, store, rest = _setup()

    async def main() -> Any:
        comp = await _make(rest, clock)
        return await comp([1], None, max_tokens=7)

    assert run(main())["max_tokens"] == 7
    assert FakeInnerCompleter.instances[0].calls == [([1], None, 7)]


def test_server_reported_expiry_triggers_one_refresh_and_retry() -> None:
    clock, store, rest = _setup(lifetime=600)

    async def main() -> Any:
        comp = await _make(rest, clock)
        FakeInnerCompleter.expired_urls.add(store_url(1))  # e.g. clock skew: the server says expired
        out = await comp([1], None, max_tokens=5)
        return comp, out

    comp, out = run(main())
    assert out["url"] == store_url(3)
    assert out["max_tokens"] == 5
    assert comp.refresh_count == 1
    assert [len(i.calls) for i in FakeInnerCompleter.instances] == [1, 1]


def test_persistent_server_expiry_says_so_plainly() -> None:
    clock, store, rest = _setup(lifetime=600)

    class AlwaysExpired(FakeInnerCompleter):
        async def __call__(self, model_input: Any, stop: Any, *, max_tokens: int | None = None) -> Any:
            raise ServerErrorDouble(
                f"could not download LoRA from {self.url}: the signed URL has expired",
                code="lora_download_failed",
            )

    async def main() -> None:
        comp = await _make(rest, clock, completer_cls=AlwaysExpired)
        await comp([1], None)

    with pytest.raises(SignedUrlExpiredError) as info:
        run(main())
    msg = str(info.value)
    assert msg.startswith(f"the server reported the signed URL for {EXTERNAL} as expired, even after it was re-resolved")
    assert "check this machine's clock" in msg
    assert SECRET_MARK not in msg and SECRET_MARK not in repr(info.value)
    assert "https://storage.example.test/" in msg  # the redacted URL stays readable
    assert store.url_calls() == ["get_external_weights_urls"] * 2


def test_other_inner_errors_propagate_without_refresh() -> None:
    clock, store, rest = _setup()

    class Boom(FakeInnerCompleter):
        async def __call__(self, model_input: Any, stop: Any, *, max_tokens: int | None = None) -> Any:
            raise ServerErrorDouble("rate limited", code="rate_limit_exceeded")

    async def main() -> None:
        comp = await _make(rest, clock, completer_cls=Boom)
        await comp([1], None)

    with pytest.raises(ServerErrorDouble, match="rate limited"):
        run(main())
    assert store.url_calls() == ["get_external_weights_urls"]


def test_failed_refresh_keeps_a_still_valid_url_and_backs_off(caplog: pytest.LogCaptureFixture) -> None:
    clock, store, rest = _setup(lifetime=600)

    async def main() -> list[str]:
        comp = await _make(rest, clock, refresh_margin_seconds=300, refresh_retry_seconds=30)
        store.fail_with = RuntimeError(f"tinker unavailable, see https://x.test/?sig={SECRET_MARK}")
        urls = []
        clock.advance(320)  # refresh due, URL valid for 280 s more
        urls.append((await comp([1], None))["url"])  # refresh fails -> old URL
        clock.advance(10)
        urls.append((await comp([1], None))["url"])  # backing off: no new attempt
        clock.advance(25)
        store.fail_with = None
        urls.append((await comp([1], None))["url"])  # retry due -> fresh URL
        return urls

    with caplog.at_level(logging.WARNING, logger="sail_lite.tinker"):
        urls = run(main())
    assert urls == [store_url(1), store_url(1), store_url(3)]
    assert store.url_calls() == ["get_external_weights_urls"] * 3
    warnings_ = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings_) == 1 and "keeping the current one" in warnings_[0]
    assert SECRET_MARK not in warnings_[0]


def test_failed_refresh_after_expiry_raises_expired() -> None:
    clock, store, rest = _setup(lifetime=600)

    async def main() -> None:
        comp = await _make(rest, clock)
        store.checkpoints.clear()  # e.g. the checkpoint's TTL ran out on Tinker
        clock.advance(700)
        await comp([1], None)

    with pytest.raises(SignedUrlExpiredError) as info:
        run(main())
    assert f"the signed URL for {EXTERNAL} expired and re-resolving it failed" in str(info.value)
    assert isinstance(info.value.__cause__, TinkerCheckpointError)
    assert isinstance(info.value.__cause__.__cause__, NotFoundErrorDouble)


def test_explicit_refresh() -> None:
    clock, store, rest = _setup()

    async def main() -> Any:
        comp = await _make(rest, clock)
        first = comp.checkpoint
        second = await comp.refresh()
        return comp, first, second

    comp, first, second = run(main())
    assert first.url == store_url(1) and second.url == store_url(3)
    assert comp.checkpoint is second and comp.inner.url == second.url and comp.refresh_count == 1


def test_repr_redacts() -> None:
    clock, store, rest = _setup()
    comp = run(_make(rest, clock, api_key="sail-secret-key-XYZ"))
    text = repr(comp) + str(comp)
    assert SECRET_MARK not in text and "sail-secret-key-XYZ" not in text
    assert EXTERNAL in text and "expires in 10 min" in text and "moonshotai/Kimi-K2.6" in text


def test_pickles_as_configuration_plus_current_url() -> None:
    store = CheckpointStoreDouble(url_lifetime_seconds=3600)
    store.checkpoints.add(EXTERNAL)
    comp = run(_make(Tinker038RestClientDouble(store), None))  # type: ignore[arg-type]  # real clock
    blob = pickle.dumps(comp)
    again = pickle.loads(blob)
    assert type(again) is type(comp)
    assert again.checkpoint.url == comp.checkpoint.url
    assert again.inner is None  # rebuilt lazily
    out = run(again([1], None))
    assert out["url"] == comp.checkpoint.url  # used without re-resolving (no RestClient needed)
    assert store.url_calls() == ["get_external_weights_urls"]


def test_argument_errors_before_any_request() -> None:
    clock, store, rest = _setup()
    with pytest.raises(SailArgumentError, match="^tinker_lora_signed_url: expected to be left out"):
        run(_make(rest, clock, tinker_lora_signed_url="https://x"))
    with pytest.raises(SailArgumentError, match="^lora: expected to be left out"):
        run(_make(rest, clock, lora="my-lora"))
    with pytest.raises(AdapterConfigError, match="^adapter_config.r"):
        run(_make(rest, clock, adapter_config={**ADAPTER, "r": 128}))
    with pytest.raises(AdapterConfigError, match="^adapter_config.base_model_name_or_path"):
        run(_make(rest, clock, base_model="Qwen/Qwen3-8B"))
    with pytest.raises(SailArgumentError, match="^ttl_seconds"):
        run(_make(rest, clock, ttl_seconds=10))
    with pytest.raises(SailArgumentError, match="^refresh_margin_seconds"):
        run(_make(rest, clock, refresh_margin_seconds=-1))
    with pytest.raises(SignedUrlUnavailableError):
        store.checkpoints.add(SAMPLER)
        run(_make(rest, clock, path=SAMPLER, ttl_seconds=3600))
    assert store.calls == [] and store.ttls == {}
    assert FakeInnerCompleter.instances == []


def test_tinker_lora_name_can_be_overridden() -> None:
    clock, store, rest = _setup()
    run(_make(rest, clock, tinker_lora_name="step-50"))
    run(_make(rest, clock, tinker_lora_name=None))
    assert [i.kwargs["tinker_lora_name"] for i in FakeInnerCompleter.instances] == ["step-50", None]


@pytest.fixture()
def service() -> Iterator[TinkerServiceDouble]:
    old = os.environ.get("TINKER_TELEMETRY")
    os.environ["TINKER_TELEMETRY"] = "0"
    srv = TinkerServiceDouble(url_lifetime_seconds=900).start()
    srv.add_checkpoint(EXTERNAL)
    try:
        yield srv
    finally:
        srv.close()
        if old is None:
            os.environ.pop("TINKER_TELEMETRY", None)
        else:
            os.environ["TINKER_TELEMETRY"] = old


def test_with_the_real_rest_client(service: TinkerServiceDouble) -> None:
    import tinker

    rest = tinker.RestClient(base_url=service.base_url, api_key=API_KEY)

    async def main() -> Any:
        comp = await sail_completer_for_checkpoint(
            rest, EXTERNAL, adapter_config=ADAPTER, ttl_seconds=7200, completer_cls=FakeInnerCompleter, **KW
        )
        first = await comp([1, 2, 3], None)
        await comp.refresh()
        second = await comp([1, 2, 3], None)
        return first, second

    first, second = run(main())
    assert SECRET_MARK in first["url"] and SECRET_MARK in second["url"] and first["url"] != second["url"]
    assert [r.method for r in service.checkpoint_requests()] == ["PUT", "GET", "GET"]
    assert service.ttls == {("run-7:train:0", "external_weights/step_000050"): 7200}
