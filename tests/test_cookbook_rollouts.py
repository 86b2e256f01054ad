"""The completers run unchanged inside tinker-cookbook's own rollout code (do_single_rollout,
do_group_rollout, run_rollout with a per-turn sampling timeout) on a small multi-turn Env,
against the emulator."""

from __future__ import annotations

import asyncio
import time

import pytest
from tinker_cookbook.rl.rollout_limits import RolloutLimits
from tinker_cookbook.rl.rollout_runner import SamplingTurnTimeoutError, run_rollout
from tinker_cookbook.rl.rollouts import do_group_rollout, do_single_rollout

import sail_lite
from sail_lite.demo.toy_env import ArithmeticEnv, ArithmeticGroupBuilder, make_problems
from sail_lite.emulator import Emulator

MODEL = "sail-lite/byte-ngram"


@pytest.fixture(scope="module")
def emu():
    with Emulator(latency=0) as e:
        yield e


def sail(emu: Emulator, **kw) -> sail_lite.SailTokenCompleter:
    return sail_lite.SailTokenCompleter(model=MODEL, max_tokens=kw.pop("max_tokens", 12), base_url=emu.base_url, api_key=emu.api_key, **kw)


def openai_compatible(emu: Emulator) -> sail_lite.OpenAICompatibleTokenCompleter:
    return sail_lite.OpenAICompatibleTokenCompleter(model=MODEL, max_tokens=12, base_url=emu.base_url + "/v1", api_key=emu.api_key)


def check_transitions(trajectory) -> None:
    assert trajectory.transitions, "at least one turn"
    for t in trajectory.transitions:
        assert t.ac.tokens is not None
        assert len(t.ac.logprobs) == len(t.ac.tokens)
        assert t.ac.stop_reason in ("stop", "length")


@pytest.mark.parametrize("make_policy", [sail, openai_compatible], ids=["sail", "openai-compatible"])
def test_single_multi_turn_rollout(emu, make_policy):
    [problem] = make_problems(1, seed=1)
    policy = make_policy(emu)

    async def rollouts():
        return await asyncio.gather(*[do_single_rollout(policy, ArithmeticEnv(problem, max_turns=3)) for _ in range(8)])

    trajectories = asyncio.run(rollouts())
    for trajectory in trajectories:
        check_transitions(trajectory)
        assert len(trajectory.transitions) <= 3
        assert trajectory.transitions[-1].episode_done
    # With a byte n-gram model most answers are wrong, so some episodes use several turns,
    # and each later observation extends the earlier one (what the cookbook merges on).
    multi = [t for t in trajectories if len(t.transitions) > 1]
    assert multi, "expected some multi-turn episodes"
    first, second = multi[0].transitions[:2]
    assert second.ob.to_ints()[: first.ob.length] == first.ob.to_ints()


@pytest.mark.parametrize("make_policy", [sail, openai_compatible], ids=["sail", "openai-compatible"])
def test_group_rollout(emu, make_policy):
    problems = make_problems(3, seed=2)
    policy = make_policy(emu)

    async def groups():
        return await asyncio.gather(*[do_group_rollout(ArithmeticGroupBuilder(p, group_size=4), policy) for p in problems])

    results = asyncio.run(groups())
    assert len(results) == 3
    for group in results:
        assert len(group.trajectories_G) == 4
        for trajectory in group.trajectories_G:
            check_transitions(trajectory)
        rewards = group.get_total_rewards()
        assert len(rewards) == 4 and all(0.0 <= r <= 1.0 for r in rewards)


@pytest.mark.timeout(60)
def test_sampling_turn_timeout_cancels_on_the_server():
    """run_rollout wraps each policy call in asyncio.timeout: the abandoned sample must be
    cancelled server-side, and the completer keeps working afterwards."""
    with Emulator(latency={"windows": {"priority": 5.0}, "jitter": 0}) as emu:
        policy = sail(emu)
        [problem] = make_problems(1, seed=3)
        limits = RolloutLimits(sampling_turn_timeout_seconds=0.3)
        with pytest.raises(SamplingTurnTimeoutError):
            asyncio.run(run_rollout(policy, ArithmeticEnv(problem), limits=limits))
        deadline = time.monotonic() + 5
        while emu.stats()["cancels_effective"] < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert emu.stats()["cancels_effective"] == 1
        emu.update(latency=0)
        assert asyncio.run(do_single_rollout(policy, ArithmeticEnv(problem))).transitions
