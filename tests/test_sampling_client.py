"""``SailSamplingClient``: tinker's SamplingClient surface on Sail, against the emulator, with the
real tinker / tinker-cookbook packages: results are real ``SampleResponse``s, the cookbook's own
``TinkerTokenCompleter`` and rollout code run on it unchanged, what Sail cannot do fails clearly,
and it pickles without secrets."""

from __future__ import annotations

import asyncio
import multiprocessing
import pickle
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import pytest
import tinker
from tinker_cookbook.completers import TinkerTokenCompleter
from tinker_cookbook.rl.rollouts import (
    do_group_rollout,
    do_group_rollout_and_filter_constant_reward,
    set_rollout_executor,
)

import sail_lite
from sail_lite.demo.toy_env import ArithmeticGroupBuilder, make_problems
from sail_lite.emulator import Emulator
from wire_recorder import WireRecorder

MODEL = "sail-lite/byte-ngram"
PROMPT = tinker.ModelInput.from_ints(list(b"The quick brown fox"))


@pytest.fixture(scope="module")
def emu():
    with Emulator(latency=0) as e:
        yield e


def client(emu: Emulator, **kw: Any) -> sail_lite.SailSamplingClient:
    return sail_lite.SailSamplingClient(model=MODEL, base_url=kw.pop("base_url", emu.base_url), api_key=emu.api_key, **kw)


def test_sample_returns_a_real_sample_response(emu):
    response = client(emu).sample(PROMPT, 4, tinker.SamplingParams(max_tokens=6, temperature=0.8)).result()
    assert isinstance(response, tinker.types.SampleResponse)
    assert len(response.sequences) == 4
    for seq in response.sequences:
        assert isinstance(seq, tinker.types.SampledSequence)
        assert 0 < len(seq.tokens) <= 6
        assert len(seq.logprobs) == len(seq.tokens)
        assert seq.stop_reason in ("stop", "length")
    assert len({seq.sequence_id for seq in response.sequences}) == 4, "distinct sequence ids"


def test_await_and_result_inside_and_outside_a_loop(emu):
    c = client(emu)
    params = tinker.SamplingParams(max_tokens=4)

    async def inside() -> Any:
        awaited = await c.sample(PROMPT, 1, params)
        deprecated = await c.sample_async(PROMPT, 1, params)
        pending = c.sample(PROMPT, 1, params)
        with pytest.raises(sail_lite.SailEventLoopError, match="await"):
            pending.result()  # would block the loop the sample runs on
        return awaited, deprecated, await pending

    for response in asyncio.run(inside()):
        assert len(response.sequences) == 1
    # Outside any loop, .result() blocks on a background loop; .future() is a concurrent future.
    future = c.sample(PROMPT, 2, params)
    assert len(future.future().result().sequences) == 2


def test_params_map_onto_the_request(emu):
    with WireRecorder(emu.base_url) as wire:
        c = client(emu, base_url=wire.base_url, completion_window="standard")
        c.sample(PROMPT, 1, tinker.SamplingParams(max_tokens=7, temperature=0.3, top_p=0.9, stop=["\n"])).result()
        c.sample(PROMPT, 1, tinker.SamplingParams(max_tokens=5, stop=[10, 11])).result()
    creates = [r.json() for r in wire.requests if r.method == "POST"]
    assert [b["max_output_tokens"] for b in creates] == [7, 5]
    assert (creates[0]["temperature"], creates[0]["top_p"], creates[0]["stop"]) == (0.3, 0.9, ["\n"])
    assert (creates[1]["temperature"], creates[1]["top_p"], creates[1]["stop"]) == (1.0, 1.0, [10, 11])
    assert all(b["raw_prompt_tokens"] == PROMPT.to_ints() for b in creates)
    assert all(b["metadata"]["completion_window"] == "standard" for b in creates)


def test_num_samples_makes_n_creates_sharing_one_prompt_cache_key(emu):
    with WireRecorder(emu.base_url) as wire:
        response = client(emu, base_url=wire.base_url).sample(PROMPT, 8, tinker.SamplingParams(max_tokens=4)).result()
        other = tinker.ModelInput.from_ints(list(b"Something else entirely"))
        client(emu, base_url=wire.base_url).sample(other, 1, tinker.SamplingParams(max_tokens=4)).result()
    creates = [r.json() for r in wire.requests if r.method == "POST"]
    assert len(response.sequences) == 8 and len(creates) == 9
    group_keys = {b.get("prompt_cache_key") for b in creates[:8]}
    assert len(group_keys) == 1 and None not in group_keys, group_keys
    assert creates[8].get("prompt_cache_key") not in group_keys, "another prompt, another key"


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"include_prompt_logprobs": True}, "include_prompt_logprobs"),
        ({"topk_prompt_logprobs": 5}, "topk_prompt_logprobs"),
        ({"topk_sample_logprobs": 2}, "topk_sample_logprobs"),
    ],
)
def test_what_sail_cannot_do_fails_naming_the_argument(emu, kwargs, argument):
    with pytest.raises(sail_lite.SailUnsupportedError, match=argument) as info:
        client(emu).sample(PROMPT, 1, tinker.SamplingParams(max_tokens=4), **kwargs)
    assert info.value.argument == argument
    assert "fallback_sampling_client" in str(info.value)


@pytest.mark.parametrize(
    ("params", "argument"),
    [
        (tinker.SamplingParams(max_tokens=4, top_k=5), "sampling_params.top_k"),
        (tinker.SamplingParams(max_tokens=4, seed=3), "sampling_params.seed"),
    ],
)
def test_unsupported_sampling_params(emu, params, argument):
    with pytest.raises(sail_lite.SailUnsupportedError) as info:
        client(emu).sample(PROMPT, 1, params)
    assert info.value.argument == argument


def test_bad_arguments_are_argument_errors(emu):
    with pytest.raises(sail_lite.SailArgumentError, match="num_samples"):
        client(emu).sample(PROMPT, 0, tinker.SamplingParams(max_tokens=4))
    with pytest.raises(sail_lite.SailArgumentError, match="max_tokens"):
        client(emu).sample(PROMPT, 1, tinker.SamplingParams())
    with pytest.raises(sail_lite.SailArgumentError, match="temperature"):
        sail_lite.SailSamplingClient(model=MODEL, api_key="k", temperature=0.5)


class RecordingTinkerSampler:
    """Stands in for a remote ``tinker.SamplingClient`` (Tinker's sampler cannot run here): records
    the calls a fallback receives."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def compute_logprobs(self, prompt: Any, prompt_logprobs_last_n: Any = None) -> list[float | None]:
        self.calls.append(("compute_logprobs", {"prompt": prompt.to_ints()}))
        return [None] + [-1.0] * (prompt.length - 1)

    def sample(self, prompt: Any, num_samples: int, sampling_params: Any, **kwargs: Any) -> str:
        self.calls.append(("sample", kwargs))
        return "from-tinker"


def test_fallback_client_serves_what_sail_cannot(emu):
    fallback = RecordingTinkerSampler()
    c = client(emu, fallback_sampling_client=fallback)
    assert c.compute_logprobs(PROMPT)[1:] == [-1.0] * (PROMPT.length - 1)
    assert c.sample(PROMPT, 1, tinker.SamplingParams(max_tokens=2), include_prompt_logprobs=True) == "from-tinker"
    assert [name for name, _ in fallback.calls] == ["compute_logprobs", "sample"]
    # Plain sampling still goes to Sail.
    assert len(c.sample(PROMPT, 1, tinker.SamplingParams(max_tokens=2)).result().sequences) == 1
    assert len(fallback.calls) == 2


def test_without_fallback_compute_logprobs_says_what_to_do(emu):
    with pytest.raises(sail_lite.SailUnsupportedError, match="fallback_sampling_client") as info:
        client(emu).compute_logprobs(PROMPT)
    assert info.value.argument == "compute_logprobs"


def test_base_model_and_tokenizer(emu):
    from sail_lite.demo.toy_env import BYTE_TOKENIZER_NAME, register_byte_tokenizer

    register_byte_tokenizer()
    c = client(emu, base_model=BYTE_TOKENIZER_NAME)
    assert c.get_base_model() == BYTE_TOKENIZER_NAME
    assert c.get_tokenizer().encode("hi") == list(b"hi")


def test_tinker_token_completer_runs_the_cookbook_group_rollout(emu):
    before = emu.stats()["completions"]
    policy = TinkerTokenCompleter(client(emu), max_tokens=8, temperature=0.9)
    [problem] = make_problems(1, seed=3)
    group = asyncio.run(do_group_rollout(ArithmeticGroupBuilder(problem=problem, group_size=4), policy))
    samples = 0
    for trajectory in group.trajectories_G:
        for t in trajectory.transitions:
            assert len(t.ac.logprobs) == len(t.ac.tokens) > 0
            assert t.ac.sequence_id
            samples += 1
    assert emu.stats()["completions"] - before == samples


def test_pickles_without_secrets(emu, monkeypatch):
    c = client(emu)
    blob = pickle.dumps(c)
    assert emu.api_key.encode() not in blob
    monkeypatch.delenv("SAIL_API_KEY", raising=False)
    with pytest.raises(sail_lite.SailArgumentError, match="SAIL_API_KEY"):
        pickle.loads(blob)
    monkeypatch.setenv("SAIL_API_KEY", emu.api_key)
    copy = pickle.loads(blob)
    assert repr(copy) == repr(c)
    assert len(copy.sample(PROMPT, 1, tinker.SamplingParams(max_tokens=2)).result().sequences) == 1


def test_a_signed_url_client_refuses_to_pickle(emu):
    url = "https://storage.example/ckpt/adapter_model.safetensors?sig=SECRETSIG"
    c = client(emu, tinker_lora_signed_url=url, adapter_config={"peft_type": "LORA", "r": 8})
    assert "SECRETSIG" not in repr(c)
    with pytest.raises(sail_lite.SailError, match="tinker_path") as info:
        pickle.dumps(c)
    assert "SECRETSIG" not in str(info.value)


def _group_rollouts(sampling_client: Any, n_groups: int) -> list[Any]:
    async def run() -> list[Any]:
        builders = [ArithmeticGroupBuilder(problem=p, group_size=2) for p in make_problems(n_groups, seed=11)]
        return await asyncio.gather(
            *[
                do_group_rollout_and_filter_constant_reward(sampling_client, b, max_tokens=8, temperature=1.0,
                                                            do_remove_constant_reward_groups=False, enable_logging=False)
                for b in builders
            ]
        )

    return asyncio.run(run())


def _check_groups_ran_on_the_emulator(emu: Emulator, before: int, groups: list[Any]) -> None:
    samples = sum(len(traj.transitions) for g in groups for traj in g.trajectories_G)
    assert samples >= 2 * len(groups)
    assert emu.stats()["completions"] - before == samples


def test_spawn_process_pool_executor_samples_on_sail(emu, monkeypatch):
    """The cookbook pickles the sampling client into each task; spawned workers rebuild it (and
    their own engine) and sample on Sail, with the key from their environment."""
    monkeypatch.setenv("SAIL_API_KEY", emu.api_key)
    before = emu.stats()["completions"]
    with ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn")) as pool:
        set_rollout_executor(pool)
        try:
            groups = _group_rollouts(client(emu), 4)
        finally:
            set_rollout_executor(None)
    _check_groups_ran_on_the_emulator(emu, before, groups)


def test_ray_executor_samples_on_sail(emu, monkeypatch):
    """A local Ray cluster on loopback (started by the executor); each Ray worker samples on Sail."""
    from sail_lite.ray_executor import RayExecutor

    monkeypatch.setenv("SAIL_API_KEY", emu.api_key)
    before = emu.stats()["completions"]
    executor = RayExecutor(init_kwargs={"num_cpus": 2, "include_dashboard": False, "_node_ip_address": "127.0.0.1"})
    try:
        set_rollout_executor(executor)
        try:
            groups = _group_rollouts(client(emu), 4)
        finally:
            set_rollout_executor(None)
        # The executor's own contract: results, exceptions and shutdown.
        assert executor.submit(pow, 2, 10).result() == 1024
        with pytest.raises(ZeroDivisionError):
            executor.submit(divmod, 1, 0).result()
    finally:
        executor.shutdown()
    _check_groups_ran_on_the_emulator(emu, before, groups)
    with pytest.raises(RuntimeError, match="shutdown"):
        executor.submit(pow, 2, 2)
