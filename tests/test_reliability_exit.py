"""Interpreter exit: a process that sampled with retries and cancellations, and still has
samples in flight (on an open loop in the main thread and on a daemon thread's running loop),
exits cleanly: exit code 0, no abort, no hang, nothing alarming on stderr.

The official SDK aborts here in about one run in eight (``Fatal Python error:
PyGILState_Release ... finalizing``): its tokio threads call into Python during interpreter
finalization. sail-lite's engine threads never touch Python, so every run must be clean.
Each run is a fresh interpreter (it pays the tinker-cookbook/torch import), several at a
time, all against one faulty emulator in the test process.
"""

from __future__ import annotations

import json
import os

import pytest

from reliability_helpers import MODEL, record_outcome, run_python_many
from sail_lite.emulator import Emulator

CHILD = r"""
import asyncio, json, sys, threading
import sail_lite
from sail_lite import _bridge

base_url, api_key, model = sys.argv[1:4]
completer = sail_lite.SailTokenCompleter(model=model, max_tokens=8, base_url=base_url, api_key=api_key, timeout=2.0)

async def sample_retry_and_cancel():
    # Retried samples: the emulator injects 429/5xx/dropped connections on creates and polls.
    await asyncio.gather(*(completer([1, 2, i]) for i in range(60)), return_exceptions=True)
    # Cancelled samples: the engine sends server-side cancels in the background.
    tasks = [asyncio.create_task(completer([3, 4, i])) for i in range(40)]
    await asyncio.sleep(0.05)
    for task in tasks[:20]:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)

asyncio.run(sample_retry_and_cancel())

# Samples still in flight at exit: a loop left open (never closed) in the main thread ...
loop = asyncio.new_event_loop()
pending = [loop.create_task(completer([5, 6, i])) for i in range(50)]
for task in pending:
    task._log_destroy_pending = False  # keep stderr for what matters
loop.run_until_complete(asyncio.sleep(0.05))
main_in_flight = _bridge.bridge_for(loop).hub.in_flight()

# ... and a daemon thread whose loop is still running samples when the interpreter exits.
started = threading.Event()
def background():
    async def forever():
        tasks = [asyncio.create_task(completer([7, 8, i])) for i in range(50)]
        started.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(3600)
    asyncio.run(forever())
threading.Thread(target=background, daemon=True).start()
started.wait(30)

metrics = sail_lite.engine_metrics()
print(json.dumps({"retries": metrics["retries"], "cancels_sent": metrics["cancels_sent"],
                  "in_flight_at_exit": main_in_flight}), flush=True)
"""

FAULTS = {
    "apply_to": ["create", "poll", "cancel"],
    "rate_429": 0.05,
    "retry_after_seconds": 0.05,
    "rate_500": 0.05,
    "rate_503": 0.05,
    "rate_drop": 0.05,
}
ALARMING = ("Fatal Python error", "panicked", "Traceback", "Segmentation fault", "Aborted", "core dumped")


def run_exits(runs: int, parallel: int, scenario: str) -> None:
    with Emulator(latency={"scale": 0.2}, faults=FAULTS) as emu:
        results = run_python_many(CHILD, [emu.base_url, emu.api_key, MODEL], runs=runs, parallel=parallel, timeout=180)
    clean = 0
    problems = []
    for n, result in enumerate(results):
        alarming = [word for word in ALARMING if word in result.stderr]
        if result.returncode != 0 or alarming:
            problems.append(f"run {n}: exit {result.returncode}, {alarming}: {result.stderr[-1500:]}")
            continue
        report = json.loads(result.stdout.strip().splitlines()[-1])
        # Each run really exercised what it claims: retries, cancels, samples in flight at exit.
        assert report["retries"] > 0 and report["in_flight_at_exit"] > 0, report
        clean += 1
    record_outcome(scenario, runs=runs, clean_exits=clean, aborts_or_hangs=runs - clean)
    assert not problems, "\n".join(problems)


@pytest.mark.timeout(600)
def test_interpreter_exits_cleanly_10_runs():
    run_exits(10, parallel=min(4, (os.cpu_count() or 2) + 1), scenario="interpreter exit with samples in flight (default run)")


@pytest.mark.soak
@pytest.mark.timeout(3600)
def test_interpreter_exits_cleanly_100_runs():
    run_exits(100, parallel=min(6, (os.cpu_count() or 2) + 2), scenario="interpreter exit with samples in flight")
