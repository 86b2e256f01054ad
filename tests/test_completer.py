"""SailTokenCompleter against the real emulator over loopback HTTP: samples, stops, limits,
LoRA metadata on the wire, retries without duplicates, deadlines and cancellation reaching the
server, error surfacing, pickling and fork."""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import signal
import time

import pytest
import tinker
from tinker_cookbook.completers import TokenCompleter, TokensWithLogprobs

import sail_lite
from sail_lite.emulator import Emulator
from wire_recorder import WireRecorder

MODEL = "sail-lite/byte-ngram"
PROMPT = list(b"The weather today is")


@pytest.fixture(scope="module")
def emu():
    with Emulator(latency=0, loras={"style-a": {"rank": 8, "seed": 1}}) as e:
        yield e


def make(emu: Emulator, **kw) -> sail_lite.SailTokenCompleter:
    kw.setdefault("model", MODEL)
    kw.setdefault("max_tokens", 16)
    kw.setdefault("base_url", emu.base_url)
    kw.setdefault("api_key", emu.api_key)
    return sail_lite.SailTokenCompleter(**kw)


def run(coro):
    return asyncio.run(coro)


def wait_for(predicate, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_is_a_cookbook_token_completer_and_samples(emu):
    completer = make(emu)
    assert isinstance(completer, TokenCompleter)
    out = run(completer(tinker.ModelInput.from_ints(PROMPT)))
    assert isinstance(out, TokensWithLogprobs)
    assert 1 <= len(out.tokens) <= 16
    assert all(isinstance(t, int) and 0 <= t <= 256 for t in out.tokens)
    assert len(out.logprobs) == len(out.tokens)
    assert all(lp <= 0.0 for lp in out.logprobs)
    assert out.stop_reason in ("stop", "length")


def test_logprobs_off_is_none_and_not_requested(emu):
    with WireRecorder(emu.base_url) as wire:
        out = run(make(emu, base_url=wire.base_url, request_logprobs=False)(PROMPT))
        assert out.maybe_logprobs is None and out.tokens
        assert "include" not in wire.creates()[0].json()
        out = run(make(emu, base_url=wire.base_url)(PROMPT))
        assert wire.creates()[1].json()["include"] == ["message.output_text.logprobs"]


def test_create_body_on_the_wire(emu):
    with WireRecorder(emu.base_url) as wire:
        completer = make(emu, base_url=wire.base_url, temperature=0.7, top_p=0.9, metadata={"run": "r1"})
        run(completer(PROMPT))
        [create] = wire.creates()
        body = create.json()
        assert body["raw_prompt_tokens"] == PROMPT
        assert body["max_output_tokens"] == 16
        assert (body["temperature"], body["top_p"], body["background"]) == (0.7, 0.9, True)
        assert body["metadata"] == {"run": "r1", "completion_window": "priority"}
        assert create.headers["authorization"] == f"Bearer {emu.api_key}"
        # Scheduled window: the create carries an idempotency key.
        assert create.headers.get("idempotency-key", "").startswith("sail-lite-")


def test_model_inputs_of_one_or_several_text_chunks_send_their_tokens(emu):
    """A one-chunk ModelInput is handed over without to_ints(); several chunks are joined."""
    from tinker.types import EncodedTextChunk

    several = tinker.ModelInput(chunks=[EncodedTextChunk(tokens=PROMPT[:3]), EncodedTextChunk(tokens=PROMPT[3:])])
    with WireRecorder(emu.base_url) as wire:
        completer = make(emu, base_url=wire.base_url)
        run(completer(tinker.ModelInput.from_ints(PROMPT)))
        run(completer(several))
        assert [c.json()["raw_prompt_tokens"] for c in wire.creates()] == [PROMPT, PROMPT]


def test_asap_sends_no_idempotency_key(emu):
    with WireRecorder(emu.base_url) as wire:
        run(make(emu, base_url=wire.base_url, completion_window="asap")(PROMPT))
        assert "idempotency-key" not in wire.creates()[0].headers


@pytest.mark.parametrize(
    "stop, wire_stop",
    [("\n", ["\n"]), ([" ", "\n"], [" ", "\n"]), (32, [32]), ([32, 10], [32, 10])],
)
def test_each_stop_form(emu, stop, wire_stop):
    with WireRecorder(emu.base_url) as wire:
        completer = make(emu, base_url=wire.base_url, max_tokens=64)

        async def many():
            return await asyncio.gather(*[completer(PROMPT, stop) for _ in range(20)])

        outs = run(many())
        assert wire.creates()[0].json()["stop"] == wire_stop
    stopped = [o for o in outs if o.stop_reason == "stop"]
    assert stopped, "a space or newline should end some of 20 samples within 64 bytes"
    for o in stopped:
        text = bytes(t for t in o.tokens if t < 256).decode(errors="replace")
        ends_on_stop = o.tokens[-1] == 256 or (
            any(text.endswith(s) for s in wire_stop) if isinstance(wire_stop[0], str) else o.tokens[-1] in wire_stop
        )
        assert ends_on_stop, o


def test_per_call_max_tokens_takes_the_minimum(emu):
    with WireRecorder(emu.base_url) as wire:
        completer = make(emu, base_url=wire.base_url, max_tokens=50)
        short = run(completer(PROMPT, max_tokens=3))
        run(completer(PROMPT, max_tokens=500))
        assert len(short.tokens) <= 3
        assert [c.json()["max_output_tokens"] for c in wire.creates()] == [3, 50]


def test_truncation_reports_length(emu):
    completer = make(emu, max_tokens=1)

    async def many():
        return await asyncio.gather(*[completer(PROMPT) for _ in range(10)])

    outs = run(many())
    assert all(len(o.tokens) == 1 for o in outs)
    assert any(o.stop_reason == "length" for o in outs)
    assert all(o.stop_reason == "length" for o in outs if o.tokens[-1] != 256)


def test_context_window_caps_max_tokens(emu):
    with WireRecorder(emu.base_url) as wire:
        completer = make(emu, base_url=wire.base_url, max_tokens=40, context_window=len(PROMPT) + 5)
        run(completer(PROMPT))
        assert wire.creates()[0].json()["max_output_tokens"] == 5
        with pytest.raises(sail_lite.SailArgumentError) as err:
            run(make(emu, context_window=len(PROMPT))(PROMPT))
        assert err.value.argument == "model_input"


def test_registered_lora_on_the_wire_and_sampled(emu):
    with WireRecorder(emu.base_url) as wire:
        out = run(make(emu, base_url=wire.base_url, lora="style-a")(PROMPT))
        assert out.tokens
        meta = wire.creates()[0].json()["metadata"]
        assert meta["lora"] == "style-a" and meta["completion_window"] == "priority"


def test_tinker_signed_url_metadata_on_the_wire(emu):
    from sail_lite.demo.lora_archive import adapter_config as make_adapter_config
    from sail_lite.demo.lora_archive import lora_archive

    archive, adapter_config = lora_archive(7, rank=4), make_adapter_config(rank=4)
    url = emu.add_tinker_archive("ckpt-7", archive, ttl_seconds=600)
    # The completer's own keys win over caller metadata.
    with WireRecorder(emu.base_url) as wire:
        completer = make(
            emu,
            base_url=wire.base_url,
            tinker_lora_signed_url=url,
            adapter_config=json.dumps(adapter_config),
            tinker_lora_name="step-7",
            metadata={"lora": "ignored", "team": "rl"},
        )
        assert url not in repr(completer)
        out = run(completer(PROMPT))
        assert out.tokens
        meta = wire.creates()[0].json()["metadata"]
    assert meta["lora"] == url
    assert meta["tinker_adapter_config"] == json.dumps(adapter_config, separators=(",", ":"), sort_keys=True)
    assert meta["tinker_lora_name"] == "step-7" and meta["team"] == "rl"


# --- construction-time validation: a typed error naming the argument, and no request -------

BAD_ARGUMENTS = [
    ({"model": ""}, "model"),
    ({"model": 3}, "model"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": 2.5}, "max_tokens"),
    ({"temperature": -0.1}, "temperature"),
    ({"temperature": 2.5}, "temperature"),
    ({"top_p": 1.5}, "top_p"),
    ({"top_p": float("nan")}, "top_p"),
    ({"lora": "a", "tinker_lora_signed_url": "https://x/y.tar?sig=1", "adapter_config": {}}, "lora"),
    ({"tinker_lora_signed_url": "https://x/y.tar?sig=1"}, "adapter_config"),
    ({"tinker_lora_signed_url": "https://x/y.tar?sig=1", "adapter_config": "{not json"}, "adapter_config"),
    ({"tinker_lora_signed_url": "https://x/y.tar?sig=1", "adapter_config": "[1, 2]"}, "adapter_config"),
    ({"lora": "a", "completion_window": "asap"}, "completion_window"),
    ({"tinker_lora_signed_url": "https://x/y.tar?sig=1", "adapter_config": {"r": 4}, "completion_window": "asap"}, "completion_window"),
    ({"metadata": {"k": 1}}, "metadata['k']"),
    ({"metadata": ["k"]}, "metadata"),
    ({"timeout": 0}, "timeout"),
    ({"poll_timeout": -1}, "poll_timeout"),
    ({"max_retries": -1}, "max_retries"),
    ({"context_window": 0}, "context_window"),
    ({"request_logprobs": "yes"}, "request_logprobs"),
    ({"base_url": "ftp://host"}, "base_url"),
    ({"completion_window": ""}, "completion_window"),
]


@pytest.mark.parametrize("kwargs, argument", BAD_ARGUMENTS)
def test_bad_constructor_arguments(emu, kwargs, argument):
    before = emu.stats()["requests_total"]
    with pytest.raises(sail_lite.SailArgumentError) as err:
        make(emu, **kwargs)
    assert isinstance(err.value, ValueError)
    assert err.value.argument == argument
    assert argument.split("[")[0] in str(err.value)
    assert emu.stats()["requests_total"] == before


def test_missing_api_key_is_clear(emu, monkeypatch):
    monkeypatch.delenv("SAIL_API_KEY", raising=False)
    with pytest.raises(sail_lite.SailArgumentError, match="SAIL_API_KEY") as err:
        sail_lite.SailTokenCompleter(model=MODEL, max_tokens=4, base_url=emu.base_url)
    assert err.value.argument == "api_key"


def test_environment_defaults(emu, monkeypatch):
    monkeypatch.setenv("SAIL_API_URL", emu.base_url)
    monkeypatch.setenv("SAIL_API_KEY", emu.api_key)
    assert run(sail_lite.SailTokenCompleter(model=MODEL, max_tokens=2)(PROMPT)).tokens


@pytest.mark.parametrize(
    "model_input, stop, max_tokens, argument",
    [
        ([], None, None, "model_input"),
        (["a"], None, None, "model_input"),
        ([-1], None, None, "model_input"),
        ([2**31], None, None, "model_input"),
        ([True], None, None, "model_input"),
        (object(), None, None, "model_input"),
        (PROMPT, "", None, "stop"),
        (PROMPT, ["a", 1], None, "stop"),
        (PROMPT, [-5], None, "stop"),
        (PROMPT, 2.5, None, "stop"),
        (PROMPT, None, 0, "max_tokens"),
    ],
)
def test_bad_call_arguments(emu, model_input, stop, max_tokens, argument):
    completer = make(emu)
    before = emu.stats()["requests_total"]
    with pytest.raises(sail_lite.SailArgumentError) as err:
        run(completer(model_input, stop, max_tokens=max_tokens))
    assert err.value.argument == argument
    assert emu.stats()["requests_total"] == before


# --- faults, deadlines, cancellation, server errors ---------------------------------------


@pytest.mark.timeout(120)
def test_retries_through_faults_create_nothing_twice():
    faults = {"rate_429": 0.1, "retry_after_seconds": 0.05, "rate_500": 0.05, "rate_503": 0.05, "rate_drop": 0.05}
    with Emulator(latency=0, faults=faults, seed=3) as emu:
        completer = make(emu, max_tokens=8)
        retries_before = sail_lite.engine_metrics()["retries"]

        async def many():
            return await asyncio.gather(*[completer(PROMPT) for _ in range(300)])

        outs = run(many())
        stats = emu.stats()
    assert len(outs) == 300 and all(o.tokens for o in outs)
    assert stats["creates"] == 300, stats
    assert stats["duplicate_samples"] == 0, stats
    assert sum(stats["faults"].values()) > 0
    assert sail_lite.engine_metrics()["retries"] - retries_before > 0


@pytest.mark.timeout(60)
def test_poll_timeout_cancels_server_side():
    with Emulator(latency={"windows": {"priority": 5.0}, "jitter": 0}) as emu:
        completer = make(emu, poll_timeout=0.4)
        started = time.monotonic()
        with pytest.raises(sail_lite.SailTimeoutError) as err:
            run(completer(PROMPT))
        assert time.monotonic() - started < 2.0
        assert isinstance(err.value, TimeoutError)
        assert err.value.response_id
        assert wait_for(lambda: emu.stats()["cancels_effective"] == 1), emu.stats()


@pytest.mark.timeout(60)
def test_asyncio_cancellation_cancels_server_side():
    with Emulator(latency={"windows": {"priority": 5.0}, "jitter": 0}) as emu:
        completer = make(emu)

        async def cancel_some():
            tasks = [asyncio.create_task(completer(PROMPT)) for _ in range(20)]
            await asyncio.sleep(0.3)
            for t in tasks:
                t.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            assert all(isinstance(r, asyncio.CancelledError) for r in results)
            # A tinker-cookbook-style deadline around one call.
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.3):
                    await completer(PROMPT)

        run(cancel_some())
        assert wait_for(lambda: emu.stats()["cancels_effective"] == 21), emu.stats()
        emu.update(latency=0)
        assert run(completer(PROMPT)).tokens  # still works afterwards


def test_unknown_window_surfaces_the_server_400(emu):
    with pytest.raises(sail_lite.SailAPIStatusError) as err:
        run(make(emu, completion_window="weekly")(PROMPT))
    assert err.value.status == 400
    assert err.value.code
    assert "400" in str(err.value)


def test_failed_response_carries_code_and_response_id():
    with Emulator(latency=0, faults={"rate_fail": 1.0}) as emu:
        with pytest.raises(sail_lite.SailResponseFailedError) as err:
            run(make(emu)(PROMPT))
    assert err.value.response_id and err.value.response_id in str(err.value)
    assert err.value.code


def test_wrong_key_is_an_authentication_error(emu):
    with pytest.raises(sail_lite.SailAuthenticationError) as err:
        run(make(emu, api_key="sk-wrong-key-123")(PROMPT))
    assert err.value.status == 401
    assert "sk-wrong-key-123" not in str(err.value)


def test_unreachable_server_is_a_connection_error():
    completer = sail_lite.SailTokenCompleter(
        model=MODEL, max_tokens=4, base_url="http://127.0.0.1:9", api_key="k", max_retries=1
    )
    with pytest.raises(sail_lite.SailConnectionError) as err:
        run(completer(PROMPT))
    assert isinstance(err.value, ConnectionError)
    assert err.value.attempts == 2


# --- pickling and fork -----------------------------------------------------------------------


def test_pickles_as_configuration(emu):
    completer = make(emu, lora="style-a", max_tokens=5, temperature=0.5)
    clone = pickle.loads(pickle.dumps(completer))
    assert type(clone) is type(completer)
    assert repr(clone) == repr(completer)
    assert emu.api_key not in repr(clone)
    assert len(run(clone(PROMPT)).tokens) <= 5


@pytest.mark.timeout(60)
def test_forked_child_samples_after_parent_sampled(emu):
    completer = make(emu)
    assert run(completer(PROMPT)).tokens
    pid = os.fork()
    if pid == 0:  # child: bounded by an alarm so a hang cannot stall the suite
        signal.alarm(20)
        try:
            out = asyncio.run(completer(PROMPT))
            os._exit(0 if out.tokens else 3)
        except BaseException:
            os._exit(4)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    assert run(completer(PROMPT)).tokens  # the parent is unaffected


@pytest.mark.timeout(60)
def test_unreferenced_tasks_still_complete():
    """asyncio keeps only weak references to tasks; a pending sample must keep its own
    awaiting task alive (as any pending I/O does), even through garbage collections."""
    import gc

    results = []
    with Emulator(latency={"windows": {"priority": 0.5}, "jitter": 0}) as emu:
        completer = make(emu)

        async def one():
            results.append(await completer(PROMPT))

        async def main():
            for _ in range(20):
                asyncio.get_running_loop().create_task(one())  # deliberately not kept
            for _ in range(200):
                gc.collect()
                await asyncio.sleep(0.02)
                if len(results) == 20:
                    break

        run(main())
    assert len(results) == 20
