"""The benchmark harness (benches/) works end to end: a seconds-long run of sail-lite against
an emulator process in each scenario kind, through the same code `make bench` runs. The
figures are not checked (the machine may be busy), only that every sample arrived intact."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHES = Path(__file__).resolve().parent.parent / "benches"

pytest.importorskip("tinker_cookbook.completers")


def test_harness_runs_sail_lite_end_to_end(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCHES / "run_benchmarks.py"), "--smoke", "sail-lite", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120, cwd=BENCHES,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((tmp_path / "summary.json").read_text())
    scenarios = report["scenarios"]

    throughput = scenarios["throughput"]["clients"]["sail-lite"]
    assert throughput["errors_total"] == 0 and throughput["succeeded_total"] == throughput["n_requested"], throughput
    assert 1.9 < throughput["http_requests_per_sample"] < 3

    poll = scenarios["poll-0.2s"]["clients"]["sail-lite"]
    assert poll["errors_total"] == 0 and poll["overhead_p50_ms"] is not None

    faults = scenarios["faults"]["clients"]["sail-lite"]
    assert faults["errors_total"] == 0 and faults["duplicates_total"] == 0, faults
    assert "### 1. Throughput and client CPU" in (tmp_path / "tables.md").read_text()
