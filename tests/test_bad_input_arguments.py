"""Bad arguments, to the constructors and to each call: a ``SailArgumentError`` (a
``ValueError``) that names the argument, raised before any HTTP request is made (the
emulator must see none), never echoing a secret."""

from __future__ import annotations

import asyncio

import pytest
import tinker
from tinker.types import EncodedTextChunk, ImageChunk

import sail_lite
from reliability_helpers import MODEL, prompt_for
from sail_lite.emulator import Emulator


@pytest.fixture(scope="module")
def emu():
    with Emulator(latency=0) as e:
        yield e


@pytest.fixture
def quiet_emu(emu):
    """The emulator with its counters zeroed; tests end with ``assert_no_request``."""
    emu.reset_stats()
    return emu


def assert_no_request(emu: Emulator) -> None:
    assert emu.stats()["requests_total"] == 0, "an HTTP request was made for a bad argument"


def assert_names(err: BaseException, argument: str) -> None:
    assert isinstance(err, sail_lite.SailArgumentError) and isinstance(err, ValueError), repr(err)
    assert err.argument == argument or err.argument.startswith(argument + "["), (err.argument, argument)
    assert argument in str(err)


# --- SailTokenCompleter(...) --------------------------------------------------------------

SAIL_CONSTRUCTOR_CASES = [
    ("model", ""), ("model", None), ("model", 3), ("model", "   "),
    ("max_tokens", 0), ("max_tokens", -1), ("max_tokens", 1.5), ("max_tokens", True), ("max_tokens", "8"), ("max_tokens", None),
    ("max_tokens", 2**32),
    ("temperature", -0.1), ("temperature", 2.5), ("temperature", float("nan")), ("temperature", float("inf")), ("temperature", "1"), ("temperature", True),
    ("top_p", -0.5), ("top_p", 1.5), ("top_p", float("nan")), ("top_p", None),
    ("completion_window", ""), ("completion_window", 5), ("completion_window", None),
    ("lora", ""), ("lora", 3),
    ("tinker_lora_signed_url", "ftp://host/ckpt.tar"), ("tinker_lora_signed_url", "not a url"), ("tinker_lora_signed_url", 7),
    ("tinker_lora_name", ""), ("tinker_lora_name", 1),
    ("metadata", "completion_window=flex"), ("metadata", ["a", "b"]), ("metadata", {"key": 1}), ("metadata", {"key": None}),
    ("metadata", {1: "value"}), ("metadata", {"": "value"}),
    ("timeout", 0), ("timeout", -1), ("timeout", float("nan")), ("timeout", float("inf")), ("timeout", "5"), ("timeout", True),
    ("poll_timeout", 0), ("poll_timeout", -3), ("poll_timeout", float("inf")), ("poll_timeout", "60"),
    ("request_logprobs", 1), ("request_logprobs", "yes"), ("request_logprobs", None),
    ("base_url", "api.sailresearch.com"), ("base_url", "ftp://host"), ("base_url", 3), ("base_url", ""),
    ("base_url", "http://"),
    ("base_url", "http://exa mple.com"),
    ("api_key", ""), ("api_key", "   "), ("api_key", "sk-bad\nkey"), ("api_key", 42),
    ("max_retries", -1), ("max_retries", 1.5), ("max_retries", True), ("max_retries", None),
    ("max_retries", 2**32),
    ("context_window", 0), ("context_window", -5), ("context_window", 2.0),
    ("max_connections", 0), ("max_connections", 65537), ("max_connections", 1.5),
    ("ca_bundle", ""), ("ca_bundle", 3),
    ("ca_bundle", "/nonexistent/ca.pem"),
    ("adapter_config", "{not json"), ("adapter_config", ["r", 8]), ("adapter_config", 8), ("adapter_config", {"r": {1, 2}}),
    ("adapter_config", {"r": float("nan")}),
]


def needs_signed_url(argument: str) -> dict:
    """adapter_config is only used (and so only validated) with a Tinker checkpoint URL."""
    return {"tinker_lora_signed_url": "http://127.0.0.1:9/ckpt.tar?signature=abc"} if argument == "adapter_config" else {}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("argument, value", SAIL_CONSTRUCTOR_CASES)
def test_sail_constructor_rejects(quiet_emu, argument, value):
    kwargs = {"model": MODEL, "max_tokens": 8, "base_url": quiet_emu.base_url, "api_key": quiet_emu.api_key, **needs_signed_url(argument)}
    kwargs[argument] = value
    try:
        completer = sail_lite.SailTokenCompleter(**kwargs)
    except sail_lite.SailArgumentError as err:
        assert_names(err, argument)
        if argument == "api_key" and isinstance(value, str) and value.strip():
            assert value not in str(err) and repr(value) not in str(err), "the key was echoed"
    else:
        # Accepted at construction: then the first call must reject it, still before any request.
        with pytest.raises(sail_lite.SailArgumentError) as info:
            asyncio.run(asyncio.wait_for(completer(prompt_for(0)), 10))
        assert_names(info.value, argument)
    assert_no_request(quiet_emu)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"lora": "my-lora", "tinker_lora_signed_url": "https://host/ckpt.tar?sig=1", "adapter_config": {"r": 8}}, "lora"),
        ({"tinker_lora_signed_url": "https://host/ckpt.tar?sig=1"}, "adapter_config"),
        ({"lora": "my-lora", "completion_window": "asap"}, "completion_window"),
    ],
    ids=["lora-and-signed-url", "signed-url-without-config", "lora-on-asap"],
)
def test_sail_constructor_rejects_inconsistent_combinations(quiet_emu, kwargs, argument):
    with pytest.raises(sail_lite.SailArgumentError) as info:
        sail_lite.SailTokenCompleter(model=MODEL, max_tokens=8, base_url=quiet_emu.base_url, api_key=quiet_emu.api_key, **kwargs)
    assert_names(info.value, argument)
    assert "sig=1" not in str(info.value), "the signed URL's signature was echoed"
    assert_no_request(quiet_emu)


@pytest.mark.timeout(30)
def test_missing_api_key_is_a_clear_error_at_construction(quiet_emu, monkeypatch):
    monkeypatch.delenv("SAIL_API_KEY", raising=False)
    with pytest.raises(sail_lite.SailArgumentError) as info:
        sail_lite.SailTokenCompleter(model=MODEL, max_tokens=8, base_url=quiet_emu.base_url)
    assert_names(info.value, "api_key")
    assert "SAIL_API_KEY" in str(info.value)
    assert_no_request(quiet_emu)


# --- OpenAICompatibleTokenCompleter(...) --------------------------------------------------

OPENAI_CONSTRUCTOR_CASES = [
    ("model", ""), ("max_tokens", 0), ("max_tokens", "8"), ("base_url", None), ("base_url", "localhost:8000/v1"),
    ("temperature", 3.0), ("top_p", -1), ("api_key", ""), ("api_key_env", ""), ("api_key_env", 5),
    ("timeout", 0), ("request_logprobs", "no"), ("max_retries", -2), ("context_window", 0), ("max_connections", 0), ("ca_bundle", ""),
]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("argument, value", OPENAI_CONSTRUCTOR_CASES)
def test_openai_compatible_constructor_rejects(quiet_emu, argument, value):
    kwargs = {"model": MODEL, "max_tokens": 8, "base_url": quiet_emu.openai_base_url, "api_key": quiet_emu.api_key, argument: value}
    with pytest.raises(sail_lite.SailArgumentError) as info:
        sail_lite.OpenAICompatibleTokenCompleter(**kwargs)
    assert_names(info.value, argument)
    assert_no_request(quiet_emu)


# --- await completer(model_input, stop, max_tokens=...) ------------------------------------


def image_model_input():
    return tinker.ModelInput(chunks=[EncodedTextChunk(tokens=[1, 2]), ImageChunk(data=b"\x89PNG", format="png", expected_tokens=4)])


CALL_CASES = [
    # model_input
    ("model_input", lambda: ([],), {}),
    ("model_input", lambda: (tinker.ModelInput.from_ints([]),), {}),
    ("model_input", lambda: ([0] * 2_000_001,), {}),
    ("model_input", lambda: ([1, -1],), {}),
    ("model_input", lambda: ([2**31],), {}),
    ("model_input", lambda: ([2**64],), {}),
    ("model_input", lambda: ([1.0],), {}),
    ("model_input", lambda: ([True],), {}),
    ("model_input", lambda: ([None],), {}),
    ("model_input", lambda: ([[1]],), {}),
    ("model_input", lambda: ("hello",), {}),
    ("model_input", lambda: (b"hello",), {}),
    ("model_input", lambda: (None,), {}),
    ("model_input", lambda: ({1, 2},), {}),
    ("model_input", lambda: (image_model_input(),), {}),
    # stop
    ("stop", lambda: ([1], ""), {}),
    ("stop", lambda: ([1], [""]), {}),
    ("stop", lambda: ([1], ["\n", 2]), {}),
    ("stop", lambda: ([1], -1), {}),
    ("stop", lambda: ([1], 2**31), {}),
    ("stop", lambda: ([1], [0, 2**31]), {}),
    ("stop", lambda: ([1], [-5]), {}),
    ("stop", lambda: ([1], 2.5), {}),
    ("stop", lambda: ([1], b"\n"), {}),
    ("stop", lambda: ([1], {"\n"}), {}),
    ("stop", lambda: ([1], [None]), {}),
    ("stop", lambda: ([1], [True]), {}),
    ("stop", lambda: ([1], list(range(10_001))), {}),
    # max_tokens
    ("max_tokens", lambda: ([1],), {"max_tokens": 0}),
    ("max_tokens", lambda: ([1],), {"max_tokens": -3}),
    ("max_tokens", lambda: ([1],), {"max_tokens": 2.0}),
    ("max_tokens", lambda: ([1],), {"max_tokens": True}),
    ("max_tokens", lambda: ([1],), {"max_tokens": "4"}),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("argument, make_args, kwargs", CALL_CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CALL_CASES)])
def test_call_rejects(quiet_emu, argument, make_args, kwargs):
    completer = sail_lite.SailTokenCompleter(model=MODEL, max_tokens=8, base_url=quiet_emu.base_url, api_key=quiet_emu.api_key)
    with pytest.raises(sail_lite.SailArgumentError) as info:
        asyncio.run(asyncio.wait_for(completer(*make_args(), **kwargs), 10))
    assert_names(info.value, argument)
    assert_no_request(quiet_emu)


@pytest.mark.timeout(60)
def test_prompt_longer_than_context_window_is_rejected(quiet_emu):
    completer = sail_lite.SailTokenCompleter(
        model=MODEL, max_tokens=8, base_url=quiet_emu.base_url, api_key=quiet_emu.api_key, context_window=16
    )
    with pytest.raises(sail_lite.SailArgumentError) as info:
        asyncio.run(completer(list(range(16))))
    assert_names(info.value, "model_input")
    assert_no_request(quiet_emu)


@pytest.mark.timeout(120)
def test_the_longest_allowed_prompt_is_accepted(emu):
    """The boundary of the 2,000,001-token rejection: 2,000,000 tokens go through."""
    completer = sail_lite.SailTokenCompleter(model=MODEL, max_tokens=1, base_url=emu.base_url, api_key=emu.api_key)
    sample = asyncio.run(completer([97] * 2_000_000))
    assert len(sample.tokens) == 1 and len(sample.logprobs) == 1


@pytest.mark.timeout(60)
@pytest.mark.parametrize("argument, value", [("timeout", 1e300), ("poll_timeout", 1e300), ("timeout", 1e19), ("poll_timeout", 1e19)])
def test_huge_finite_durations_never_panic_or_hang(emu, argument, value):
    """Either rejected up front, or accepted (as "no limit") and sampling works. Before the
    fix, 1e300 panicked in Duration::from_secs_f64 (a PanicException, a BaseException) and a
    1e19 poll_timeout overflowed Instant inside the sample's task: the sample never ended."""
    try:
        completer = sail_lite.SailTokenCompleter(model=MODEL, max_tokens=4, base_url=emu.base_url, api_key=emu.api_key, **{argument: value})
    except sail_lite.SailArgumentError as err:
        assert_names(err, argument)
        return
    sample = asyncio.run(asyncio.wait_for(completer(prompt_for(0)), 3))
    assert sample.tokens
