"""The engine outlives event loops: asyncio and uvloop, several loops in several threads at
once, ``asyncio.run`` many times in one process, and loops that close under it."""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import weakref

import pytest

from reliability_helpers import (
    LOOP_KINDS,
    SEED_METADATA,
    as_tuple,
    os_thread_count,
    prompt_for,
    record_outcome,
    reference_samples,
    run_on,
    sail_completer,
    wait_until,
)
from sail_lite.emulator import Emulator


def pipe_fds() -> int:
    """Open pipe fds of this process (each event loop's completion hub holds two)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("pipe:")
        except OSError:
            pass
    return count


@pytest.fixture(scope="module")
def emu():
    with Emulator(latency=0) as e:
        yield e


@pytest.fixture(scope="module")
def expected(emu):
    """Fault-free answers for prompts 0..599 (the seed makes them a function of the prompt)."""
    completer = sail_completer(emu, metadata=SEED_METADATA)
    return [as_tuple(s) for s in asyncio.run(reference_samples(completer, (prompt_for(i) for i in range(600))))]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("loop_kind", LOOP_KINDS)
def test_samples_are_correct_on_each_loop_kind(emu, expected, loop_kind):
    completer = sail_completer(emu, metadata=SEED_METADATA)

    async def run():
        return await asyncio.gather(*(completer(prompt_for(i)) for i in range(600)))

    assert [as_tuple(s) for s in run_on(loop_kind, run())] == expected


@pytest.mark.timeout(120)
def test_several_loops_in_several_threads_at_once(emu, expected):
    """One completer shared by six threads, each with its own loop (four asyncio, two uvloop)."""
    completer = sail_completer(emu, metadata=SEED_METADATA)
    kinds = ["asyncio", "asyncio", "asyncio", "asyncio", "uvloop", "uvloop"]
    results: dict[int, list] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(len(kinds))

    def worker(n: int, kind: str) -> None:
        async def run():
            start.wait()
            return await asyncio.gather(*(completer(prompt_for(i)) for i in range(n * 100, n * 100 + 100)))

        try:
            results[n] = [as_tuple(s) for s in run_on(kind, run())]
        except BaseException as exc:  # reported below, on the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n, kind)) for n, kind in enumerate(kinds)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a loop thread hung"
    assert not errors, errors
    for n in range(len(kinds)):
        assert results[n] == expected[n * 100 : n * 100 + 100]
    record_outcome("6 loops in 6 threads (4 asyncio, 2 uvloop)", samples=600, wrong=0, lost=0, duplicated=0)


@pytest.mark.timeout(120)
def test_asyncio_run_many_times_reuses_the_engine(emu, expected):
    completer = sail_completer(emu, metadata=SEED_METADATA)
    asyncio.run(completer(prompt_for(0)))  # warm: engine built, pool connected
    threads_before, pipes_before = os_thread_count(), pipe_fds()
    runs = 150

    async def one(i):
        return as_tuple(await completer(prompt_for(i)))

    for i in range(runs):
        assert asyncio.run(one(i % 600)) == expected[i % 600]
    gc.collect()
    # No engine rebuilt per loop, and each closed loop's completion pipe was released.
    assert os_thread_count() <= threads_before
    assert pipe_fds() <= pipes_before
    record_outcome("asyncio.run 150 times in one process", samples=runs, wrong=0, lost=0, leaked_pipes=pipe_fds() - pipes_before)


@pytest.mark.timeout(60)
def test_a_completer_outlives_the_loop_it_was_first_used_on(emu, expected):
    completer = sail_completer(emu, metadata=SEED_METADATA)
    first = asyncio.new_event_loop()
    assert as_tuple(first.run_until_complete(completer(prompt_for(1)))) == expected[1]
    first.close()
    second = asyncio.new_event_loop()
    try:
        assert as_tuple(second.run_until_complete(completer(prompt_for(2)))) == expected[2]
    finally:
        second.close()


@pytest.mark.timeout(30)
def test_using_a_closed_loop_raises_at_once(emu):
    completer = sail_completer(emu)
    loop = asyncio.new_event_loop()
    loop.run_until_complete(completer(prompt_for(0)))
    loop.close()
    call = completer(prompt_for(0))
    try:
        with pytest.raises(RuntimeError, match="closed"):
            loop.run_until_complete(call)
    finally:
        call.close()
    # Driving the coroutine with no running loop at all is just as clear.
    call = completer(prompt_for(0))
    with pytest.raises(RuntimeError, match="no running event loop"):
        call.send(None)
    call.close()
    assert emu.stats()["in_flight"] == 0


@pytest.mark.timeout(60)
def test_a_loop_dropped_with_samples_in_flight_cancels_them():
    """A loop closed and dropped while samples run is collected; its finalizer closes the
    completion hub, which cancels the samples server-side and releases the pipe."""
    with Emulator(latency={"scale": 10.0}) as slow:
        completer = sail_completer(slow)
        pipes_before = pipe_fds()
        loop = asyncio.new_event_loop()
        tasks = [loop.create_task(completer(prompt_for(i))) for i in range(20)]
        loop.run_until_complete(asyncio.sleep(0.3))
        assert slow.stats()["in_flight"] == 20
        for task in tasks:  # silence "Task was destroyed but it is pending"
            task._log_destroy_pending = False
        loop.close()
        gone = weakref.ref(loop)
        del loop, tasks, task  # drop every reference this test holds
        gc.collect()
        assert gone() is None, "the closed loop is still referenced"
        assert pipe_fds() == pipes_before, "its completion pipe is still open"
        assert wait_until(lambda: slow.stats()["cancels_received"] == 20, timeout=3), "its samples still run"
