"""OpenAICompatibleTokenCompleter end to end against the emulator's OpenAI-compatible
/completions (plain /v1 and Tinker's /oai/api/v1 layout), and the openai SDK talking to the
same server with the kwargs from sail_lite.tinker.openai_client_kwargs."""

from __future__ import annotations

import asyncio

import pytest
import tinker

import sail_lite
from sail_lite.emulator import Emulator
from sail_lite.tinker import openai_base_url, openai_client_kwargs
from wire_recorder import WireRecorder

MODEL = "sail-lite/byte-ngram"
SAMPLER_PATH = "tinker://0034d8c9-aaaa:train:0/sampler_weights/000080"
PROMPT = list(b"Q: What is 2 + 3?\nA:")


@pytest.fixture(scope="module")
def emu():
    with Emulator(latency=0) as e:
        yield e


def completer(base_url: str, api_key: str, **kw) -> sail_lite.OpenAICompatibleTokenCompleter:
    kw.setdefault("model", MODEL)
    kw.setdefault("max_tokens", 8)
    return sail_lite.OpenAICompatibleTokenCompleter(base_url=base_url, api_key=api_key, **kw)


def test_samples_token_ids_with_logprobs(emu):
    with WireRecorder(emu.base_url) as wire:
        out = asyncio.run(completer(wire.base_url + "/v1", emu.api_key)(tinker.ModelInput.from_ints(PROMPT), ["\n"]))
        [request] = [r for r in wire.requests if r.path == "/v1/completions"]
    assert 1 <= len(out.tokens) <= 8 and len(out.logprobs) == len(out.tokens)
    assert out.stop_reason in ("stop", "length")
    body = request.json()
    assert body["prompt"] == PROMPT and body["max_tokens"] == 8 and body["stop"] == ["\n"]
    assert body["return_token_ids"] is True and body["return_tokens_as_token_ids"] is True
    assert body["logprobs"] == 0
    assert "prompt_cache_key" not in body  # a Sail routing hint: never on /completions
    assert request.headers["authorization"] == f"Bearer {emu.api_key}"


def test_length_and_stop_token_ids(emu):
    c = completer(emu.base_url + "/v1", emu.api_key, max_tokens=1)
    async def eight():
        return await asyncio.gather(*[c(PROMPT) for _ in range(8)])

    outs = asyncio.run(eight())
    assert all(len(o.tokens) == 1 for o in outs)
    assert all(o.stop_reason == "length" for o in outs if o.tokens[-1] != 256)
    out = asyncio.run(completer(emu.base_url + "/v1", emu.api_key, max_tokens=64)(PROMPT, [32, 10]))
    if out.stop_reason == "stop":
        assert out.tokens[-1] in (32, 10, 256)


def test_logprobs_off(emu):
    out = asyncio.run(completer(emu.base_url + "/v1", emu.api_key, request_logprobs=False)(PROMPT))
    assert out.maybe_logprobs is None and out.tokens


def test_tinker_sampler_path_through_tinker_layout(emu, monkeypatch):
    monkeypatch.setenv("TINKER_BASE_URL", emu.base_url)
    base = openai_base_url()
    assert base == emu.base_url + "/oai/api/v1"
    out = asyncio.run(completer(base, emu.api_key, model=SAMPLER_PATH)(PROMPT))
    assert out.tokens


def test_training_checkpoint_is_rejected_before_any_request(emu):
    before = emu.stats()["requests_total"]
    with pytest.raises(sail_lite.SailArgumentError) as err:
        completer(emu.base_url + "/v1", emu.api_key, model="tinker://run:train:0/weights/000080")
    assert "sampler" in str(err.value)
    assert emu.stats()["requests_total"] == before


def test_server_errors_surface_with_status(emu):
    with pytest.raises(sail_lite.SailAPIStatusError) as err:
        asyncio.run(completer(emu.base_url + "/v1", emu.api_key, model="no-such-model")(PROMPT))
    assert err.value.status in (400, 404)
    with pytest.raises(sail_lite.SailAuthenticationError):
        asyncio.run(completer(emu.base_url + "/v1", "sk-wrong")(PROMPT))


def test_retries_through_faults():
    with Emulator(latency=0, faults={"apply_to": ["completions"], "rate_503": 0.2, "rate_429": 0.1, "retry_after_seconds": 0.05}, seed=5) as emu:
        c = completer(emu.base_url + "/v1", emu.api_key)

        async def many():
            return await asyncio.gather(*[c(PROMPT) for _ in range(100)])

        outs = asyncio.run(many())
        assert all(o.tokens for o in outs)
        assert emu.stats()["faults_total"] > 0


def test_openai_sdk_talks_to_the_emulator_with_the_kwargs_helper(emu, monkeypatch):
    import openai  # a pinned test dependency (.ci/requirements-test.txt)

    monkeypatch.setenv("TINKER_BASE_URL", emu.base_url)
    monkeypatch.setenv("TINKER_API_KEY", emu.api_key)
    kwargs = openai_client_kwargs()
    assert emu.api_key not in repr(kwargs)
    client = openai.OpenAI(**kwargs)
    result = client.completions.create(model=SAMPLER_PATH, prompt="Q: 1 + 1 =", max_tokens=5, logprobs=1)
    choice = result.choices[0]
    assert choice.text is not None and choice.finish_reason in ("stop", "length")
    assert len(choice.logprobs.token_logprobs) >= 1
