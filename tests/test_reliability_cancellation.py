"""Cancelling samples: the caller's task cancellation (and tinker-cookbook's
``asyncio.timeout``) reaches the server as one cancel per sample, leaves no background work
behind, and the completer keeps working afterwards."""

from __future__ import annotations

import asyncio

import pytest
from tinker_cookbook.rl.rollout_limits import RolloutLimits
from tinker_cookbook.rl.rollout_runner import run_rollout
from tinker_cookbook.rl.types import StopReason

import sail_lite
from reliability_helpers import LOOP_KINDS, async_wait_until, prompt_for, record_outcome, run_on, sail_completer
from sail_lite import _bridge
from sail_lite.demo.toy_env import ArithmeticEnv, make_problems
from sail_lite.emulator import Emulator

# Long enough that nothing finishes before it is cancelled.
SLOW = {"scale": 10.0}


async def assert_nothing_left(emu: Emulator, cancelled: int) -> None:
    """Every cancelled sample was cancelled server-side; no task, future or engine sample
    remains on this loop, and the server runs nothing."""
    assert await async_wait_until(lambda: emu.stats()["cancels_received"] >= cancelled, timeout=10)
    stats = emu.stats()
    assert stats["cancels_received"] == cancelled and stats["cancels_effective"] == cancelled
    assert stats["in_flight"] == 0
    bridge = _bridge.bridge_for(asyncio.get_running_loop())
    assert not bridge.futures and bridge.hub.in_flight() == 0
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def completer_still_works(completer, samples: int = 100) -> None:
    results = await asyncio.gather(*(completer(prompt_for(i)) for i in range(samples)))
    assert all(len(r.tokens) == len(r.logprobs) and r.tokens for r in results)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("loop_kind", LOOP_KINDS)
def test_cancelling_1000_in_flight_samples(loop_kind):
    samples = 1000
    with Emulator(latency=SLOW) as emu:
        completer = sail_completer(emu)
        metrics_before = sail_lite.engine_metrics()

        async def run():
            tasks = [asyncio.create_task(completer(prompt_for(i))) for i in range(samples)]
            assert await async_wait_until(lambda: emu.stats()["creates"] == samples, timeout=30)
            for task in tasks:
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            assert all(isinstance(r, asyncio.CancelledError) for r in results)
            await assert_nothing_left(emu, samples)
            # Every engine task ended (as cancelled) and confirmed its server-side cancel.
            def engine_done() -> bool:
                metrics = sail_lite.engine_metrics()
                return (metrics["samples_failed"] - metrics_before["samples_failed"] == samples
                        and metrics["cancels_sent"] - metrics_before["cancels_sent"] == samples)

            assert await async_wait_until(engine_done, timeout=10), sail_lite.engine_metrics()
            emu.update(latency=0)
            await completer_still_works(completer)

        run_on(loop_kind, run())
        stats = emu.stats()
    record_outcome(f"cancel 1,000 in-flight samples ({loop_kind})", samples=samples, cancels_received=stats["cancels_received"] ,
                   lost=0, duplicated=stats["duplicate_samples"])


@pytest.mark.timeout(120)
def test_asyncio_timeout_cancels_each_sample_server_side():
    samples = 500
    with Emulator(latency=SLOW) as emu:
        completer = sail_completer(emu)

        async def one(i):
            async with asyncio.timeout(0.5):
                return await completer(prompt_for(i))

        async def run():
            results = await asyncio.gather(*(one(i) for i in range(samples)), return_exceptions=True)
            assert all(type(r) is TimeoutError for r in results), {type(r).__name__ for r in results}
            await assert_nothing_left(emu, samples)
            emu.update(latency=0)
            await completer_still_works(completer)

        asyncio.run(run())
        stats = emu.stats()
    record_outcome("asyncio.timeout around 500 samples", samples=samples, cancels_received=stats["cancels_received"], lost=0, duplicated=0)


@pytest.mark.timeout(120)
def test_cookbook_rollout_timeout_cancels_the_sample_in_flight():
    """tinker-cookbook's own whole-rollout timeout (an outer ``asyncio.timeout``)."""
    rollouts = 50
    problems = make_problems(rollouts, seed=3)
    with Emulator(latency=SLOW) as emu:
        completer = sail_completer(emu, max_tokens=4)
        limits = RolloutLimits(rollout_timeout_seconds=0.5)

        async def run():
            trajectories = await asyncio.gather(*(run_rollout(completer, ArithmeticEnv(p), limits=limits) for p in problems))
            assert all(t.stop_reason == StopReason.ROLLOUT_TIMEOUT for t in trajectories)
            await assert_nothing_left(emu, rollouts)

        asyncio.run(run())


@pytest.mark.timeout(120)
def test_cancelling_while_the_create_is_in_flight_still_cancels_the_created_response():
    """The create itself is not abandoned midway (the sample would be running unnamed on the
    server); once it answers, the engine cancels it."""
    samples = 100
    with Emulator(latency=SLOW, faults={"apply_to": ["create"], "rate_slow": 1.0, "slow_seconds": 0.5}) as emu:
        completer = sail_completer(emu)

        async def run():
            tasks = [asyncio.create_task(completer(prompt_for(i))) for i in range(samples)]
            await asyncio.sleep(0.1)
            assert emu.stats()["creates"] == 0, "the creates were meant to be in flight"
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await assert_nothing_left(emu, samples)
            assert emu.stats()["creates"] == samples

        asyncio.run(run())
