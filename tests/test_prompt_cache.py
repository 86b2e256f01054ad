"""Prompt-cache locality and usage, end to end against the real emulator over loopback:
the ``prompt_cache_key`` each create carries on the wire (automatic, fixed, per call, off),
the emulator's simulated prefix cache answering with ``usage.input_tokens_details.cached_tokens``,
``TokensWithLogprobs.prompt_cache_hit_tokens`` and the usage totals of ``engine_metrics()``."""

from __future__ import annotations

import asyncio
import pickle

import pytest
import tinker

import sail_lite
from sail_lite import _bridge, _core
from sail_lite.emulator import Emulator
from sail_lite.errors import SailArgumentError
from wire_recorder import WireRecorder

MODEL = "sail-lite/byte-ngram"
# Longer than the 256 tokens the automatic key covers, so later turns share the first's key.
SYSTEM = list(b"You are a careful assistant. Answer the question, then stop. " * 6)[:300]


@pytest.fixture()
def emu():
    with Emulator(latency=0) as e:
        yield e


def make(base_url: str, emu: Emulator, **kw) -> sail_lite.SailTokenCompleter:
    kw.setdefault("model", MODEL)
    kw.setdefault("max_tokens", 8)
    return sail_lite.SailTokenCompleter(base_url=base_url, api_key=emu.api_key, **kw)


def sample_many(completer, prompts: list[list[int]]):
    async def go():
        return await asyncio.gather(*(completer(tinker.ModelInput.from_ints(p)) for p in prompts))

    return asyncio.run(go())


def keys_on_the_wire(wire: WireRecorder) -> list[str | None]:
    return [r.json().get("prompt_cache_key") for r in wire.creates()]


def test_a_grpo_group_shares_one_key_and_hits_the_cache_after_its_first_sample(emu):
    question = SYSTEM[:200] + list(b"Q: 2 + 3?\nA:")
    with WireRecorder(emu.base_url) as wire:
        group = sample_many(make(wire.base_url, emu), [question] * 8)
        other = sample_many(make(wire.base_url, emu), [list(b"Q: 7 * 6?\nA:")])
    keys = keys_on_the_wire(wire)
    assert len(set(keys[:8])) == 1 and keys[0], keys
    assert keys[8] and keys[8] != keys[0], "another prompt, another key"
    hits = sorted(out.prompt_cache_hit_tokens for out in group)
    assert hits == [0] + [len(question) - 1] * 7, "the emulator serves all but the last token from cache"
    assert other[0].prompt_cache_hit_tokens == 0


def test_a_conversation_keeps_its_key_from_turn_to_turn(emu):
    turn1 = SYSTEM + list(b"User: hello\nAssistant:")
    with WireRecorder(emu.base_url) as wire:
        completer = make(wire.base_url, emu)
        [first] = sample_many(completer, [turn1])
        turn2 = turn1 + first.tokens + list(b"\nUser: and then?\nAssistant:")
        [second] = sample_many(completer, [turn2])
    k1, k2 = keys_on_the_wire(wire)
    assert k1 == k2 and k1
    assert first.prompt_cache_hit_tokens == 0
    assert second.prompt_cache_hit_tokens == len(turn1), "the first turn's prompt was cached"


@pytest.mark.parametrize("setting", [False, None])
def test_disabled_sends_no_key_and_never_hits(emu, setting):
    prompt = list(b"Q: 2 + 3?\nA:")
    with WireRecorder(emu.base_url) as wire:
        completer = make(wire.base_url, emu, prompt_cache_key=setting)
        outs = sample_many(completer, [prompt]) + sample_many(completer, [prompt])
    assert [r.json() for r in wire.creates()] and all("prompt_cache_key" not in r.json() for r in wire.creates())
    assert [o.prompt_cache_hit_tokens for o in outs] == [0, 0]
    assert pickle.loads(pickle.dumps(completer))._config["prompt_cache_key"] is False
    assert "prompt_cache_key=False" in repr(completer)


def test_a_fixed_key_goes_on_every_create(emu):
    a, b = list(b"shared prefix, then A"), list(b"shared prefix, then B")
    with WireRecorder(emu.base_url) as wire:
        completer = make(wire.base_url, emu, prompt_cache_key="job-42/env-7")
        [out_a] = sample_many(completer, [a])
        [out_b] = sample_many(completer, [b])
        clone = pickle.loads(pickle.dumps(completer))
        sample_many(clone, [a])
    assert keys_on_the_wire(wire) == ["job-42/env-7"] * 3
    assert out_a.prompt_cache_hit_tokens == 0
    assert out_b.prompt_cache_hit_tokens == len(b"shared prefix, then ")
    assert "prompt_cache_key='job-42/env-7'" in repr(completer)


def test_an_explicit_key_per_submit_overrides_the_completers(emu):
    """What SailSamplingClient does for the N samples of one call: one key for all."""
    prompts = [list(b"first prompt"), list(b"a different one")]

    async def submit_all(completer, key):
        loop = asyncio.get_running_loop()
        bridge = _bridge.bridge_for(loop)
        futures = [bridge.submit(loop, completer._client, completer._redactor, p, 4, None, None, prompt_cache_key=key)[1] for p in prompts]
        return await asyncio.gather(*futures)

    with WireRecorder(emu.base_url) as wire:
        asyncio.run(submit_all(make(wire.base_url, emu), "call-1"))
        asyncio.run(submit_all(make(wire.base_url, emu, prompt_cache_key=False), "call-2"))
        asyncio.run(submit_all(make(wire.base_url, emu, prompt_cache_key="fixed"), None))
    assert keys_on_the_wire(wire) == ["call-1", "call-1", "call-2", "call-2", "fixed", "fixed"]


def test_engine_metrics_usage_totals_match_the_emulators(emu):
    def usage() -> dict[str, int]:
        return {k: v for k, v in _core.engine_metrics().items() if k.startswith("usage.flex.")}

    before = usage()
    completer = make(emu.base_url, emu, completion_window="flex")
    prompt = SYSTEM[:120]
    outs = sample_many(completer, [prompt] * 5 + [list(b"short")])
    after = usage()
    delta = {k.rsplit(".", 1)[1]: after[k] - before.get(k, 0) for k in after}
    stats = emu.stats()
    assert stats["completions"] == 6
    assert delta == {
        "input_tokens": stats["input_tokens"],
        "cached_tokens": stats["cached_tokens"],
        "output_tokens": stats["tokens_generated"],
    }
    assert delta["input_tokens"] == 5 * len(prompt) + 5
    assert delta["cached_tokens"] == 4 * (len(prompt) - 1) == sum(o.prompt_cache_hit_tokens for o in outs)
    assert delta["output_tokens"] == sum(len(o.tokens) for o in outs)


@pytest.mark.parametrize("bad", [0, 1.5, "", "x" * 257, "line\nbreak", b"bytes", ["k"]])
def test_bad_settings_are_named_errors(emu, bad):
    with pytest.raises(SailArgumentError) as info:
        make(emu.base_url, emu, prompt_cache_key=bad)
    assert info.value.argument == "prompt_cache_key"


@pytest.mark.parametrize("bad", ["", "x" * 257, "tab\tinside"])
def test_a_bad_key_per_submit_is_a_named_error_before_any_request(emu, bad):
    completer = make(emu.base_url, emu)

    async def go():
        loop = asyncio.get_running_loop()
        _bridge.bridge_for(loop).submit(loop, completer._client, completer._redactor, [1, 2, 3], 4, None, None, prompt_cache_key=bad)

    with pytest.raises(SailArgumentError) as info:
        asyncio.run(go())
    assert info.value.argument == "prompt_cache_key"
    assert emu.stats()["creates"] == 0
