"""A cookbook RL run killed mid-step and resumed from its checkpoint re-attaches to the Sail
samples it had started: each logical sample is created on the server once.

Real processes: ``tinker_cookbook.rl.train.main`` inside ``sample_on_sail`` runs in a child
(``cookbook_resume_child.py``) against the emulator and the Tinker training double (which
stands in for Tinker's training service, which cannot run here), both in this process. The
first child is SIGKILLed while step 2's samples run on the emulator; the second resumes from
the step-2 checkpoint (a new Tinker training run, so the step's weights are exported under a
new URL) and must follow the journalled responses instead of creating them again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from reliability_helpers import wait_until
from sail_lite.emulator import Emulator
from tinker_training_double import TinkerTrainingDouble

CHILD = str(Path(__file__).with_name("cookbook_resume_child.py"))
STEPS, GROUPS, GROUP_SIZE = 3, 2, 2
PER_STEP = GROUPS * GROUP_SIZE
HANG_GUARD = 600  # seconds; never a speed bound, only so a hang fails instead of blocking


def start_run(emu: Emulator, double: TinkerTrainingDouble, log_path: Path, out: Path) -> subprocess.Popen[str]:
    config = {"sail_url": emu.base_url, "sail_api_key": emu.api_key, "tinker_url": double.base_url,
              "tinker_api_key": double.api_key, "log_path": str(log_path), "out": str(out),
              "steps": STEPS, "groups": GROUPS, "group_size": GROUP_SIZE}
    return subprocess.Popen([sys.executable, CHILD, json.dumps(config)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONFAULTHANDLER="1"))


def journal_lines(log_path: Path, version: int) -> int:
    path = log_path / "sail_responses" / f"weights-{version:06d}.journal"
    return len(path.read_text().splitlines()) if path.exists() else 0


@pytest.mark.timeout(1200)
def test_a_killed_rl_train_run_resumes_without_paying_twice(tmp_path):
    log_path = tmp_path / "run"
    # Each sample takes a few seconds, so the kill finds step 2's samples still running.
    with Emulator(latency={"scale": 3.0}) as emu, TinkerTrainingDouble() as double:
        first = start_run(emu, double, log_path, tmp_path / "first.json")
        try:
            got_there = wait_until(lambda: journal_lines(log_path, 2) == PER_STEP or first.poll() is not None, HANG_GUARD)
            assert got_there and first.poll() is None, first.stderr.read()[-3000:] if first.poll() is not None else ""
            running = emu.stats()["in_flight"]
        finally:
            first.kill()
            first.communicate(timeout=60)
        assert running > 0, "the run was killed while step 2's samples were still running"
        assert emu.stats()["creates"] == STEPS * PER_STEP, "steps 0-2 each created their samples once"

        second = start_run(emu, double, log_path, tmp_path / "second.json")
        _, stderr = second.communicate(timeout=HANG_GUARD)
        assert second.returncode == 0, stderr[-3000:]
        metrics = json.loads((tmp_path / "second.json").read_text())
        stats = emu.stats()

    # The resumed run started from the step-2 checkpoint and followed step 2's journalled
    # responses: no sample was created twice, none re-created, and step 2's were not re-paid.
    assert metrics["samples_reattached"] == PER_STEP
    assert metrics["samples_recreated"] == 0 and metrics["creates"] == 0
    assert stats["creates"] == STEPS * PER_STEP and stats["duplicate_samples"] == 0
    assert stats["idempotency_conflicts"] == 0
    assert stats["completions"] == STEPS * PER_STEP
    # Training went on: the second run trained step 2 on those samples.
    assert len(double.optim_steps) >= STEPS
