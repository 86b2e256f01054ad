"""Signed checkpoint URLs: the real tinker 0.38 RestClient against a local double of the Tinker
service, and method-surface doubles of older tinker releases."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import pickle
import subprocess
import sys
import textwrap
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sail_lite.errors import SailArgumentError, SailError
from sail_lite.tinker import (
    MAX_TTL_SECONDS,
    MIN_TTL_SECONDS,
    SignedUrlExpiredError,
    SignedUrlUnavailableError,
    TinkerCheckpoint,
    TinkerCheckpointError,
    TinkerPathError,
    get_tinker_checkpoint_signed_url_async,
    is_signed_url_expired_error,
    parse_tinker_path,
    redact_secrets,
    redact_url,
    resolve_tinker_checkpoint,
    validate_ttl_seconds,
)
from tinker_doubles import (
    API_KEY,
    SECRET_MARK,
    CheckpointStoreDouble,
    FakeClock,
    ServerErrorDouble,
    ServiceClientDouble,
    Tinker020RestClientDouble,
    Tinker030RestClientDouble,
    Tinker038RestClientDouble,
    TinkerServiceDouble,
)

EXTERNAL = "tinker://0034d8c9-19a5:train:0/external_weights/final"
SAMPLER = "tinker://0034d8c9-19a5:train:0/sampler_weights/000040"
TRAINING = "tinker://0034d8c9-19a5:train:0/weights/000040"


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# ---------------------------------------------------------------------------------------------
# TTL validation
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("good", [None, 3600, 86400, MAX_TTL_SECONDS, 7200.0])
def test_ttl_accepted(good: object) -> None:
    out = validate_ttl_seconds(good)
    assert out == good
    assert out is None or type(out) is int


@pytest.mark.parametrize("bad", [0, 1, 3599, MAX_TTL_SECONDS + 1, -3600, True, "3600", 3600.5, float("inf")])
def test_ttl_rejected(bad: object) -> None:
    with pytest.raises(SailArgumentError, match=r"^ttl_seconds: expected an integer number of seconds between 3600"):
        validate_ttl_seconds(bad)


def test_ttl_bounds_match_tinker_docs() -> None:
    assert MIN_TTL_SECONDS == 3600
    assert 10 * 365 * 86400 <= MAX_TTL_SECONDS <= int(10 * 365.25 * 86400)


# ---------------------------------------------------------------------------------------------
# The real tinker.RestClient (0.38) against a local double of the Tinker service
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def service() -> Iterator[TinkerServiceDouble]:
    old = os.environ.get("TINKER_TELEMETRY")
    os.environ["TINKER_TELEMETRY"] = "0"  # no telemetry posts to the double
    srv = TinkerServiceDouble().start()
    try:
        yield srv
    finally:
        srv.close()
        if old is None:
            os.environ.pop("TINKER_TELEMETRY", None)
        else:
            os.environ["TINKER_TELEMETRY"] = old


@pytest.fixture()
def svc(service: TinkerServiceDouble) -> TinkerServiceDouble:
    service.reset()
    service.url_lifetime_seconds = 600.0
    for path in (EXTERNAL, SAMPLER, TRAINING):
        service.add_checkpoint(path)
    return service


@pytest.fixture(scope="module")
def real_rest(service: TinkerServiceDouble) -> Any:
    import tinker

    return tinker.RestClient(base_url=service.base_url, api_key=API_KEY)


def test_real_client_external_weights_url_and_ttl(svc: TinkerServiceDouble, real_rest: Any) -> None:
    before = time.time()
    ck = run(resolve_tinker_checkpoint(real_rest, EXTERNAL, ttl_seconds=7200))
    assert ck.source == "external_weights"
    assert ck.url.startswith("https://storage.example.test/tinker/0034d8c9-19a5:train:0/external_weights/final/adapter_model.safetensors?")
    assert set(ck.files) == {"adapter_model.safetensors", "adapter_config.json"}
    assert ck.adapter_config_url is not None and "adapter_config.json" in ck.adapter_config_url
    assert ck.expires_at is not None and before + 590 <= ck.expires_at <= time.time() + 610
    assert ck.valid_until == ck.expires_at
    assert ck.ttl_seconds == 7200
    assert svc.ttls == {("0034d8c9-19a5:train:0", "external_weights/final"): 7200}
    # The exact routes and bodies the real client sent, TTL first.
    sent = [(r.method, r.path, r.body) for r in svc.checkpoint_requests()]
    assert sent == [
        ("PUT", "/api/v1/training_runs/0034d8c9-19a5:train:0/checkpoints/external_weights/final/ttl", {"ttl_seconds": 7200}),
        ("GET", "/api/v1/training_runs/0034d8c9-19a5:train:0/checkpoints/external_weights/final/external_weights_urls", None),
    ]
    assert all(r.api_key == API_KEY for r in svc.requests)


def test_real_client_without_ttl_sends_no_ttl(svc: TinkerServiceDouble, real_rest: Any) -> None:
    url = run(get_tinker_checkpoint_signed_url_async(real_rest, EXTERNAL))
    assert SECRET_MARK in url
    assert [r.method for r in svc.checkpoint_requests()] == ["GET"]
    assert svc.ttls == {}


def test_real_client_sampler_checkpoint_is_unavailable_and_side_effect_free(
    svc: TinkerServiceDouble, real_rest: Any
) -> None:
    for path in (SAMPLER, TRAINING):
        with pytest.raises(SignedUrlUnavailableError) as info:
            run(get_tinker_checkpoint_signed_url_async(real_rest, path, ttl_seconds=3600))
        msg = str(info.value)
        assert "the installed tinker 0.38.0" in msg
        assert path in msg
        assert "save_weights_external" in msg and "external_weights/<name>" in msg
        assert info.value.tinker_path == path  # type: ignore[attr-defined]
    assert svc.checkpoint_requests() == []  # no TTL was set for a URL we cannot get


def test_real_client_ttl_out_of_range_rejected_before_any_request(svc: TinkerServiceDouble, real_rest: Any) -> None:
    for bad in (60, 3599, MAX_TTL_SECONDS + 1):
        with pytest.raises(SailArgumentError, match="^ttl_seconds"):
            run(get_tinker_checkpoint_signed_url_async(real_rest, EXTERNAL, ttl_seconds=bad))
    assert svc.checkpoint_requests() == []


def test_real_client_unknown_checkpoint_is_a_clear_error(svc: TinkerServiceDouble, real_rest: Any) -> None:
    missing = "tinker://nope:train:0/external_weights/final"
    with pytest.raises(TinkerCheckpointError) as info:
        run(get_tinker_checkpoint_signed_url_async(real_rest, missing, ttl_seconds=3600))
    err = info.value
    assert err.status == 404  # type: ignore[attr-defined]
    assert "setting a 3600 s TTL for tinker://nope:train:0/external_weights/final failed with HTTP 404" in str(err)
    assert "no such checkpoint" in str(err)
    assert type(err.__cause__).__name__ == "NotFoundError"
    # Without a TTL the URL lookup is what fails.
    with pytest.raises(TinkerCheckpointError, match=r"getting a signed URL \(get_external_weights_urls\).*HTTP 404"):
        run(get_tinker_checkpoint_signed_url_async(real_rest, missing))


def test_real_client_error_bodies_carrying_signed_urls_are_redacted(svc: TinkerServiceDouble, real_rest: Any) -> None:
    svc.error_override = (
        403,
        {"detail": f"denied for https://storage.example.test/x?X-Goog-Signature={SECRET_MARK}99 key {API_KEY}"},
    )
    with pytest.raises(TinkerCheckpointError) as info:
        run(get_tinker_checkpoint_signed_url_async(real_rest, EXTERNAL))
    text = str(info.value) + repr(info.value)
    assert SECRET_MARK not in text and API_KEY not in text
    assert "https://storage.example.test/x?<redacted>" in text
    assert info.value.status == 403  # type: ignore[attr-defined]
    assert info.value.__cause__ is None  # the original (unredacted) error is not chained


def test_real_service_client_is_accepted(svc: TinkerServiceDouble) -> None:
    import tinker

    sc = tinker.ServiceClient(base_url=svc.base_url, api_key=API_KEY)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # create_rest_client's deprecation is silenced
        ck = run(resolve_tinker_checkpoint(sc, EXTERNAL, ttl_seconds=3600))
    assert SECRET_MARK in ck.url
    assert svc.ttls[("0034d8c9-19a5:train:0", "external_weights/final")] == 3600


def test_none_builds_rest_client_from_environment(service: TinkerServiceDouble, tmp_path: Path) -> None:
    """``None`` means ``tinker.RestClient()`` from TINKER_BASE_URL / TINKER_API_KEY. Run in a
    subprocess: tinker caches that client process-wide by (None, None), which would leak this
    double's address into later tests."""
    service.reset()
    service.add_checkpoint(EXTERNAL)
    script = tmp_path / "resolve.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import asyncio, sys
            from sail_lite.tinker import resolve_tinker_checkpoint
            ck = asyncio.run(resolve_tinker_checkpoint(None, {EXTERNAL!r}, ttl_seconds=86400))
            print(ck.source, ck.expires_at is not None, {SECRET_MARK!r} in ck.url)
            print(repr(ck))
            """
        )
    )
    env = {**os.environ, "TINKER_BASE_URL": service.base_url, "TINKER_API_KEY": API_KEY, "TINKER_TELEMETRY": "0"}
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    first, second = out.stdout.strip().splitlines()
    assert first == "external_weights True True"
    assert SECRET_MARK not in second and "?<redacted>" not in second
    assert "adapter_model.safetensors, expires in 10 min" in second
    assert service.ttls == {("0034d8c9-19a5:train:0", "external_weights/final"): 86400}


def test_bad_client_argument() -> None:
    with pytest.raises(SailArgumentError, match=r"^service_client_or_rest_client: expected a tinker.ServiceClient.*got 'int'"):
        run(resolve_tinker_checkpoint(42, EXTERNAL))
    with pytest.raises(TinkerPathError):
        run(resolve_tinker_checkpoint(object(), "tinker://x/bad/1"))


# ---------------------------------------------------------------------------------------------
# Method-surface doubles: tinker 0.38 and older releases
# ---------------------------------------------------------------------------------------------


def _store(*paths: str, **kw: Any) -> CheckpointStoreDouble:
    store = CheckpointStoreDouble(**kw)
    store.checkpoints.update(paths)
    return store


def test_038_surface_uses_awaitable_methods_not_deprecated_twins() -> None:
    store = _store(EXTERNAL)
    rest = Tinker038RestClientDouble(store)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ck = run(resolve_tinker_checkpoint(rest, EXTERNAL, ttl_seconds=3600))
    assert store.deprecated_calls == []
    assert [c[0] for c in store.calls] == ["set_checkpoint_ttl_from_tinker_path", "get_external_weights_urls"]
    assert store.ttls == {EXTERNAL: 3600}
    assert ck.url.endswith(f"adapter_model.safetensors?sig={SECRET_MARK}1")
    assert ck.source == "external_weights"


def test_038_surface_sampler_unavailable_names_the_fix() -> None:
    store = _store(SAMPLER)
    with pytest.raises(SignedUrlUnavailableError) as info:
        run(get_tinker_checkpoint_signed_url_async(Tinker038RestClientDouble(store), SAMPLER, ttl_seconds=3600))
    assert "this RestClient (Tinker038RestClientDouble)" in str(info.value)
    assert "save_weights_external" in str(info.value)
    assert store.calls == [] and store.ttls == {}


@pytest.mark.parametrize("path", [SAMPLER, TRAINING, EXTERNAL])
def test_020_surface_archive_url_via_async_twins(path: str) -> None:
    clock = FakeClock(1_800_000_000.0)
    store = _store(path, clock=clock, url_lifetime_seconds=900)
    rest = Tinker020RestClientDouble(store)
    ck = run(resolve_tinker_checkpoint(rest, path, ttl_seconds=86400, clock=clock))
    assert ck.source == "archive"
    assert ck.url.endswith(f"archive.tar?sig={SECRET_MARK}1")
    assert ck.expires_at == pytest.approx(1_800_000_900.0)
    assert ck.resolved_at == 1_800_000_000.0
    assert store.ttls == {path: 86400}
    assert [c[0] for c in store.calls] == [
        "set_checkpoint_ttl_from_tinker_path",
        "get_checkpoint_archive_url_from_tinker_path",
    ]
    # Only the _async twins were used: the sync-only methods were never called from the loop.
    assert store.sync_calls_in_async_context == []


def test_030_surface_prefers_external_urls_for_external_paths() -> None:
    store = _store(EXTERNAL, SAMPLER)
    rest = Tinker030RestClientDouble(store)
    ext = run(resolve_tinker_checkpoint(rest, EXTERNAL))
    smp = run(resolve_tinker_checkpoint(rest, SAMPLER))
    assert ext.source == "external_weights" and "adapter_model.safetensors" in ext.url
    assert smp.source == "archive" and "archive.tar" in smp.url
    assert store.sync_calls_in_async_context == []


def test_old_service_client_create_rest_client() -> None:
    store = _store(SAMPLER)
    sc = ServiceClientDouble(Tinker020RestClientDouble(store))
    url = run(get_tinker_checkpoint_signed_url_async(sc, SAMPLER, ttl_seconds=3600))
    assert SECRET_MARK in url and sc.created == 1


def test_sync_only_plain_methods_are_settled_when_no_twin_exists() -> None:
    """A client with only sync-only methods returning concurrent futures (no _async twin)."""

    class PlainOnly:
        def __init__(self, inner: Tinker020RestClientDouble) -> None:
            self.get_checkpoint_archive_url_from_tinker_path = inner.get_checkpoint_archive_url_from_tinker_path
            self.set_checkpoint_ttl_from_tinker_path = inner.set_checkpoint_ttl_from_tinker_path

    store = _store(SAMPLER)
    ck = run(resolve_tinker_checkpoint(PlainOnly(Tinker020RestClientDouble(store)), SAMPLER, ttl_seconds=3600))
    assert "archive.tar" in ck.url and store.ttls == {SAMPLER: 3600}


def test_unknown_expiry_uses_assumed_lifetime() -> None:
    clock = FakeClock(1_000_000.0)
    store = _store(SAMPLER, clock=clock, url_lifetime_seconds=None)
    ck = run(resolve_tinker_checkpoint(Tinker020RestClientDouble(store), SAMPLER, clock=clock, unknown_expiry_seconds=120))
    assert ck.expires_at is None
    assert ck.valid_until == 1_000_120.0
    assert not ck.is_expired(now=1_000_500.0)  # unknown: never claimed expired
    assert ck.needs_refresh(30, now=1_000_095.0) and not ck.needs_refresh(30, now=1_000_080.0)
    assert "expiry unknown" in repr(ck)


def test_double_errors_are_wrapped_with_status() -> None:
    store = _store()  # nothing exists
    with pytest.raises(TinkerCheckpointError, match="HTTP 404") as info:
        run(resolve_tinker_checkpoint(Tinker038RestClientDouble(store), EXTERNAL, ttl_seconds=3600))
    assert info.value.status == 404  # type: ignore[attr-defined]
    assert info.value.tinker_path == EXTERNAL  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("result", "expires_at"),
    [
        ({"url": "https://s.test/a?sig=SECRETSIG", "expires": "2030-01-01T00:00:00Z"}, 1893456000.0),
        ({"url": "https://s.test/a?sig=SECRETSIG", "expires_at": 1893456000}, 1893456000.0),
        ({"signed_url": "https://s.test/a?sig=SECRETSIG", "expires": 1893456000000}, 1893456000.0),
        ({"url": "https://s.test/a?sig=SECRETSIG", "expires": dt.datetime(2030, 1, 1)}, 1893456000.0),
        ("https://s.test/a?sig=SECRETSIG", None),
    ],
)
def test_archive_result_shapes(result: Any, expires_at: float | None) -> None:
    class Rest:
        async def get_checkpoint_archive_url_from_tinker_path_async(self, path: str) -> Any:
            return result

    ck = run(resolve_tinker_checkpoint(Rest(), SAMPLER))
    assert ck.url == "https://s.test/a?sig=SECRETSIG"
    assert ck.expires_at == expires_at


def test_external_file_choice() -> None:
    class Rest:
        def __init__(self, urls: dict[str, str]) -> None:
            self.urls = urls

        async def get_external_weights_urls_async(self, path: str) -> Any:
            return {"urls": self.urls, "expires": "2030-01-01T00:00:00+00:00"}

    one = run(resolve_tinker_checkpoint(Rest({"sub/adapter_model.safetensors": "u1", "sub/adapter_config.json": "u2"}), EXTERNAL))
    assert one.url == "u1" and one.adapter_config_url == "u2"
    with pytest.raises(SignedUrlUnavailableError, match=r"\['a.safetensors', 'b.safetensors'\]"):
        run(resolve_tinker_checkpoint(Rest({"a.safetensors": "x", "b.safetensors": "y"}), EXTERNAL))
    with pytest.raises(TinkerCheckpointError, match="lists no files"):
        run(resolve_tinker_checkpoint(Rest({}), EXTERNAL))


# ---------------------------------------------------------------------------------------------
# TinkerCheckpoint: expiry, redaction
# ---------------------------------------------------------------------------------------------


def _checkpoint(expires_in: float | None, *, now: float = 1_000_000.0) -> TinkerCheckpoint:
    url = f"https://storage.example.test/b/adapter_model.safetensors?X-Goog-Signature={SECRET_MARK}&X-Goog-Credential=abc"
    return TinkerCheckpoint(
        path=parse_tinker_path(EXTERNAL),
        url=url,
        expires_at=None if expires_in is None else now + expires_in,
        resolved_at=now,
        valid_until=now + (expires_in if expires_in is not None else 900),
        source="external_weights",
        files={"adapter_model.safetensors": url},
    )


def test_checkpoint_repr_and_str_redact() -> None:
    ck = _checkpoint(53 * 60, now=time.time())
    for text in (repr(ck), str(ck), f"{ck}", repr([ck]), repr({"c": ck})):
        assert SECRET_MARK not in text and "X-Goog" not in text
    assert "<signed url for https://storage.example.test/b/adapter_model.safetensors, expires in 53 min>" in repr(ck)
    assert EXTERNAL in repr(ck)


def test_checkpoint_expiry_queries() -> None:
    ck = _checkpoint(600)
    assert ck.seconds_left(now=1_000_100.0) == 500
    assert not ck.is_expired(now=1_000_599.0) and ck.is_expired(now=1_000_600.0)
    assert not ck.needs_refresh(300, now=1_000_299.0)
    assert ck.needs_refresh(300, now=1_000_300.0)
    # The margin is capped at half the URL's lifetime.
    assert not ck.needs_refresh(3600, now=1_000_299.0)
    assert ck.signed_url(now=1_000_599.0) == ck.url


def test_expired_checkpoint_says_so_plainly() -> None:
    ck = _checkpoint(600)
    with pytest.raises(SignedUrlExpiredError) as info:
        ck.signed_url(now=1_000_900.0)
    msg = str(info.value)
    assert msg.startswith(f"the signed URL for {EXTERNAL} expired 5 min ago (at ")
    assert "sail_completer_for_checkpoint" in msg
    assert SECRET_MARK not in msg
    assert isinstance(info.value, SailError)


def test_checkpoint_refreshed() -> None:
    store = _store(EXTERNAL)
    rest = Tinker038RestClientDouble(store)
    ck = run(resolve_tinker_checkpoint(rest, EXTERNAL, ttl_seconds=3600))
    again = run(ck.refreshed(rest))
    assert again.url != ck.url and again.path == ck.path
    assert again.ttl_seconds is None
    assert [c[0] for c in store.calls].count("set_checkpoint_ttl_from_tinker_path") == 1


def test_checkpoint_pickles() -> None:
    store = _store(EXTERNAL)
    ck = run(resolve_tinker_checkpoint(Tinker038RestClientDouble(store), EXTERNAL))
    again = pickle.loads(pickle.dumps(ck))
    assert again.url == ck.url and again.expires_at == ck.expires_at and dict(again.files) == dict(ck.files)


def test_no_secret_in_logs(caplog: pytest.LogCaptureFixture) -> None:
    store = _store(EXTERNAL)
    with caplog.at_level(logging.DEBUG, logger="sail_lite.tinker"):
        run(resolve_tinker_checkpoint(Tinker038RestClientDouble(store), EXTERNAL))
    assert caplog.records, "expected a debug record of the resolution"
    assert all(SECRET_MARK not in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------------------------------------
# Redaction helpers and expired-URL recognition
# ---------------------------------------------------------------------------------------------


def test_redact_url() -> None:
    assert redact_url("https://h.test:8443/p/a.tar?sig=x#f") == "https://h.test:8443/p/a.tar?<redacted>"
    assert redact_url("https://user:pw@h.test/p") == "https://h.test/p?<redacted>"
    assert redact_url("https://h.test/p") == "https://h.test/p"
    assert redact_url("tinker://r/sampler_weights/1") == "tinker://r/sampler_weights/1"
    assert redact_url("not a url") == "<redacted url>"


def test_redact_secrets() -> None:
    text = (
        f"failed https://s.test/a?X-Amz-Signature={SECRET_MARK} with key {API_KEY} "
        f"and token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.{SECRET_MARK} and 'X-Goog-Signature={SECRET_MARK}'"
    )
    out = redact_secrets(text)
    assert SECRET_MARK not in out and API_KEY not in out
    assert "https://s.test/a?<redacted>" in out and "tml-<redacted>" in out


@pytest.mark.parametrize(
    "exc",
    [
        ServerErrorDouble("could not download LoRA: the signed URL has expired"),
        ServerErrorDouble("failed", code="lora_url_expired"),
        ServerErrorDouble("failed", code="ExpiredToken"),
        ServerErrorDouble("<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"),
        RuntimeError("Tinker checkpoint download failed: URL expired"),
    ],
)
def test_expired_url_errors_recognised(exc: BaseException) -> None:
    assert is_signed_url_expired_error(exc)


@pytest.mark.parametrize(
    "exc",
    [
        ServerErrorDouble("response resp_1 expired", code="expired"),
        ServerErrorDouble("rate limited", code="rate_limit_exceeded"),
        ServerErrorDouble("invalid lora name", code="invalid_request"),
        TimeoutError("timed out"),
    ],
)
def test_other_errors_not_mistaken_for_expired_urls(exc: BaseException) -> None:
    assert not is_signed_url_expired_error(exc)
