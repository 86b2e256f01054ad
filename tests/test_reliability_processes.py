"""Processes: a forked child (after the parent sampled, and while it samples) builds its own
engine and samples; a spawn-started ProcessPoolExecutor runs tinker-cookbook group rollouts
with a pickled completer. Everything bounded by alarms and timeouts."""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

import pytest

from reliability_helpers import MODEL, SEED_METADATA, record_outcome, rollout_groups_in_worker, run_python, sail_completer
from sail_lite.demo.toy_env import ArithmeticGroupBuilder, make_problems
from sail_lite.emulator import Emulator

# Runs in its own interpreter so the fork happens in a process whose only threads are the
# engine's (and, in the second fork, a loop thread with samples in flight).
FORK_SCRIPT = r"""
import asyncio, json, os, signal, sys, threading
import sail_lite

base_url, api_key, model, seed = sys.argv[1:5]
completer = sail_lite.SailTokenCompleter(model=model, max_tokens=8, base_url=base_url, api_key=api_key, metadata={"seed": seed})

def prompts():
    return [list(f"fork {i}: ".encode()) for i in range(50)]

async def batch():
    return [(s.tokens, s.maybe_logprobs, s.stop_reason) for s in await asyncio.gather(*(completer(p) for p in prompts()))]

def child(expected, label):
    signal.alarm(20)  # a hang in the child kills it (exit by SIGALRM), never the test run
    try:
        ok = asyncio.run(batch()) == expected
        metrics = sail_lite.engine_metrics()
        # A fresh engine: the parent's counters did not come along.
        ok = ok and metrics["samples_started"] == 50 and metrics["samples_succeeded"] == 50
        print(json.dumps({"child": label, "ok": ok}), flush=True)
        os._exit(0 if ok else 1)
    except BaseException as exc:
        print(json.dumps({"child": label, "error": repr(exc)}), flush=True)
        os._exit(2)

def fork_and_wait(expected, label):
    pid = os.fork()
    if pid == 0:
        child(expected, label)
    return pid

expected = asyncio.run(batch())  # the parent has sampled: engine threads and pooled sockets exist
first = fork_and_wait(expected, "after-sampling")

# Fork again while a loop thread of the parent has samples in flight.
in_flight = threading.Event()
parent_result = {}
def busy():
    async def run():
        tasks = [asyncio.create_task(completer(p)) for p in prompts()]
        in_flight.set()
        parent_result["ok"] = [(s.tokens, s.maybe_logprobs, s.stop_reason) for s in await asyncio.gather(*tasks)] == expected
    asyncio.run(run())
thread = threading.Thread(target=busy)
thread.start()
in_flight.wait(10)
second = fork_and_wait(expected, "while-sampling")
thread.join(30)

codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in (first, second)]
print(json.dumps({"parent_ok": parent_result.get("ok"), "child_exit_codes": codes}), flush=True)
"""


@pytest.mark.timeout(180)
def test_forked_children_sample_after_and_while_the_parent_samples():
    with Emulator(latency=0) as emu:
        result = run_python(FORK_SCRIPT, emu.base_url, emu.api_key, MODEL, SEED_METADATA["seed"], timeout=150)
        creates = emu.stats()["creates"]
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert '"child": "after-sampling", "ok": true' in result.stdout, result.stdout + result.stderr[-2000:]
    assert '"child": "while-sampling", "ok": true' in result.stdout, result.stdout + result.stderr[-2000:]
    assert lines[-1] == '{"parent_ok": true, "child_exit_codes": [0, 0]}', lines
    assert creates == 4 * 50  # parent twice, each child once: nothing lost, nothing duplicated
    record_outcome("fork: child samples after / while parent samples", samples=200, wrong=0, lost=0, duplicated=0)


@pytest.mark.timeout(300)
def test_spawn_process_pool_runs_cookbook_rollouts_with_a_pickled_completer():
    problems = make_problems(4, seed=5)
    with Emulator(latency=0) as emu:
        completer = sail_completer(emu, max_tokens=6)
        builders = [ArithmeticGroupBuilder(p, group_size=4, max_turns=2) for p in problems]
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=2, mp_context=context) as pool:
            futures = [pool.submit(rollout_groups_in_worker, completer, builders[i::2]) for i in range(2)]
            summaries = [s for f in futures for s in f.result(timeout=240)]
        stats = emu.stats()
    assert len(summaries) == len(problems)
    assert all(s["pid"] != os.getpid() for s in summaries)
    assert all(s["trajectories"] == 4 and s["logprobs_match"] for s in summaries)
    turns = sum(sum(s["turns"]) for s in summaries)
    # One created response per sampled turn: nothing lost, nothing sampled twice.
    assert stats["creates"] == turns and stats["duplicate_samples"] == 0
    record_outcome("spawn pool: cookbook group rollouts, pickled completer", samples=turns, lost=0, duplicated=0)
