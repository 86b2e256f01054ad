"""sail-lite against its peers, in one run: `make bench` (or `make bench QUICK=1`).

Runs every scenario of scenarios.py (each client and the emulator in their own processes),
the emulator's own load generator, and the cold-start measurements; writes the raw runs and
their summary under benches/results/, the tables into BENCHMARKS.md (full runs only) and the
chart. Run it with the bench environment's Python (.bench-venv), which has all the peers."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cold_start
import loadgen
import scenarios
from runner import log, run_scenario
from summarize import summarize

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"


def machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem_kb = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")))
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    return {
        "cpu": cpu,
        "nproc": os.cpu_count(),
        "memory_gib": round(mem_kb / 1024**2),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "sail_lite_commit": commit,
        "load_average_at_start": os.getloadavg(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the reduced ~3-minute run")
    parser.add_argument("--only", nargs="*", help="scenario keys to run (default: all), plus 'loadgen' and 'cold-start'")
    parser.add_argument("--smoke", nargs="*", metavar="CLIENT", help="seconds-long run of these clients (tests)")
    parser.add_argument("--wheel", type=Path, help="the sail-lite wheel installed here (for its size)")
    parser.add_argument("--out", type=Path, help="where to write results (default: benches/results, or results/raw/quick)")
    parser.add_argument("--command", default="make bench", help="the command to quote in BENCHMARKS.md")
    args = parser.parse_args()

    mode = "smoke" if args.smoke is not None else "quick" if args.quick else "full"
    selected = (scenarios.smoke(args.smoke) if mode == "smoke" else scenarios.quick() if args.quick else scenarios.full())
    wanted = set(args.only) if args.only else None
    out = args.out or (RESULTS if mode == "full" else RESULTS / "raw" / mode)
    out.mkdir(parents=True, exist_ok=True)

    started = time.monotonic()
    report: dict[str, Any] = {
        "mode": mode,
        "command": args.command,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "scenarios": {},
    }
    raw: dict[str, Any] = {}
    for scenario in selected:
        if wanted is not None and scenario.key not in wanted:
            continue
        t0 = time.monotonic()
        results = run_scenario(sys.executable, scenario)
        raw[scenario.key] = results
        report["scenarios"][scenario.key] = {
            "title": scenario.title,
            "kind": scenario.kind,
            "parameters": scenario.client_spec("") | {"emulator": scenario.emulator_config(0), "server": scenario.server, "reps": scenario.reps},
            "clients": summarize(results, scenario.clients),
            "seconds": time.monotonic() - t0,
        }
    if mode != "smoke" and (wanted is None or "loadgen" in wanted):
        log("emulator capacity: sail-loadgen")
        report["emulator_capacity"] = loadgen.measure(sys.executable, quick=args.quick)
    if mode != "smoke" and (wanted is None or "cold-start" in wanted):
        log("cold start and sizes")
        report["cold_start"] = cold_start.measure(args.wheel, runs=3 if args.quick else cold_start.IMPORT_RUNS)
    report["total_seconds"] = time.monotonic() - started
    report["machine"]["load_average_at_end"] = os.getloadavg()

    stamp = time.strftime("%Y%m%d-%H%M%S")
    raw_dir = RESULTS / "raw" if mode == "full" else out  # raw runs are not committed
    raw_dir.mkdir(parents=True, exist_ok=True)
    (raw_dir / f"{mode}-{stamp}.json").write_text(json.dumps(raw, indent=1))
    (out / "summary.json").write_text(json.dumps(report, indent=1))
    log(f"done in {report['total_seconds'] / 60:.1f} min; summary in {out / 'summary.json'}")

    import render

    render.write_all(report, out, update_benchmarks_md=(mode == "full" and wanted is None))


if __name__ == "__main__":
    main()
