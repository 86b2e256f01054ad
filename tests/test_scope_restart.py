"""Crash-safe sampling across real processes: a child samples N prompts (groups of identical
ones) in a sampling scope against the emulator in this process and is SIGKILLed; the rerun
re-attaches to the stored samples (no new inference), a third run gets the same tokens, and
another scope name samples anew. The soak kills and restarts the client several times under
injected faults: every logical sample is started exactly once on the server, none is lost."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from reliability_helpers import record_outcome, wait_until
from sail_lite.emulator import Emulator

CHILD = str(Path(__file__).with_name("scope_child.py"))
HANG_GUARD = 600  # seconds; never a speed bound, only so a hang fails instead of blocking


def start_child(emu: Emulator, out: Path, **config) -> subprocess.Popen[str]:
    config = {"base_url": emu.base_url, "api_key": emu.api_key, "out": str(out), **config}
    return subprocess.Popen([sys.executable, CHILD, json.dumps(config)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=dict(os.environ, PYTHONFAULTHANDLER="1"))


def run_child(emu: Emulator, out: Path, **config) -> dict:
    child = start_child(emu, out, **config)
    _, stderr = child.communicate(timeout=HANG_GUARD)
    assert child.returncode == 0, stderr[-3000:]
    return json.loads(out.read_text())


def kill_when(child: subprocess.Popen[str], condition) -> None:
    """SIGKILL ``child`` once ``condition()`` holds (an emulator counter, never a sleep)."""
    try:
        assert wait_until(lambda: condition() or child.poll() is not None, timeout=HANG_GUARD), "the child never got there"
        assert child.poll() is None, f"the child ended before it was killed: {child.communicate()[1][-3000:]}"
    finally:
        child.kill()
        child.communicate(timeout=60)


def by_group(results: list, group: int) -> list[list[tuple[int, ...]]]:
    """Samples of identical prompts are interchangeable: compare each group as a sorted list."""
    assert all(isinstance(r, list) for r in results), [r for r in results if not isinstance(r, list)][:3]
    return [sorted(tuple(r) for r in results[i : i + group]) for i in range(0, len(results), group)]


@pytest.mark.timeout(1200)
def test_a_killed_run_is_replayed_by_the_next_without_new_inference(tmp_path):
    n, group = 200, 4
    # Samples take seconds, so the rerun finds them running (and polls) or finished (at once).
    with Emulator(latency={"scale": 3.0}) as emu:
        a = start_child(emu, tmp_path / "a.json", scope="run-1/step-3", n=n, group=group)
        kill_when(a, lambda: emu.stats()["creates"] >= n)
        assert emu.stats()["creates"] == n

        b = run_child(emu, tmp_path / "b.json", scope="run-1/step-3", n=n, group=group)
        stats = emu.stats()
        assert stats["creates"] == n, "no new inference"
        assert stats["idempotent_replays"] == n
        assert b["metrics"]["samples_succeeded"] == n
        assert len(set(map(tuple, b["results"]))) > n // group, "identical prompts got distinct samples"

        c = run_child(emu, tmp_path / "c.json", scope="run-1/step-3", n=n, group=group)
        assert emu.stats()["creates"] == n and emu.stats()["idempotent_replays"] == 2 * n
        assert by_group(c["results"], group) == by_group(b["results"], group)

        d = run_child(emu, tmp_path / "d.json", scope="run-1/step-4", n=n, group=group)
        assert emu.stats()["creates"] == 2 * n and emu.stats()["idempotent_replays"] == 2 * n
        assert by_group(d["results"], group) != by_group(b["results"], group)
        assert emu.stats()["duplicate_samples"] == 0


FAULTS = {
    "apply_to": ["create", "poll"],
    "rate_429": 0.03,
    "retry_after_seconds": 0.05,
    "rate_500": 0.03,
    "rate_503": 0.03,
    "rate_drop": 0.03,
}


def kill_and_restart_soak(tmp_path: Path, n: int, kills: int, scenario: str) -> None:
    group = 4
    config = {"scope": f"soak-{n}", "n": n, "group": group, "max_retries": 20, "concurrency": 2000}
    with Emulator(latency={"scale": 0.5}, faults=FAULTS) as emu:
        for k in range(kills):
            child = start_child(emu, tmp_path / f"killed-{k}.json", **config)
            # Kill each run a bit further into the work than the last one got.
            target = (k + 1) * n // (kills + 1)
            kill_when(child, lambda: emu.stats()["creates"] >= target)
        final = run_child(emu, tmp_path / "final.json", **config)
        stats = emu.stats()
    results = final["results"]
    lost = [r for r in results if not isinstance(r, list)]
    record_outcome(scenario, samples=n, kills=kills, lost=len(lost), server_creates=stats["creates"],
                   replays=stats["idempotent_replays"], faults=stats["faults_total"])
    assert not lost, lost[:3]
    assert len(results) == n
    assert stats["creates"] == n, "each logical sample started exactly once on the server"
    assert stats["duplicate_samples"] == 0
    assert stats["faults_total"] > 0 and stats["idempotent_replays"] > 0


@pytest.mark.timeout(1800)
def test_kill_and_restart_500_samples_twice_under_faults(tmp_path):
    kill_and_restart_soak(tmp_path, n=500, kills=2, scenario="scoped sampling: 500 samples, 2 kills, faults")


@pytest.mark.soak
@pytest.mark.timeout(7200)
def test_kill_and_restart_20000_samples_five_times_under_faults(tmp_path):
    kill_and_restart_soak(tmp_path, n=20_000, kills=5, scenario="scoped sampling: 20,000 samples, 5 kills, faults")
