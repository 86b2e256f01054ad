"""Runs a scenario: for each client and repetition, a fresh emulator process and a fresh
client process (bench_client.py), so no run inherits another's connections, memory or
server state. Returns one result dict per run; failures and timeouts are results too."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from emulator_process import EmulatorProcess
from scenarios import KILL_GRACE_SECONDS, Scenario

HERE = Path(__file__).resolve().parent


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _client_env(emulator: EmulatorProcess) -> dict[str, str]:
    env = dict(os.environ)
    # The official SDK reads these once per process, at import.
    env["SAIL_API_URL"] = emulator.base_url
    env["SAIL_API_KEY"] = emulator.api_key
    return env


def _start_client(python: str, scenario: Scenario, client: str, emulator: EmulatorProcess) -> subprocess.Popen:
    spec = scenario.client_spec(client) | {
        "base_url": emulator.base_url, "api_key": emulator.api_key, "emulator_pid": emulator.pid,
    }
    return subprocess.Popen(
        [python, str(HERE / "bench_client.py"), json.dumps(spec)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=HERE, env=_client_env(emulator),
    )


def _finish_client(proc: subprocess.Popen, scenario: Scenario, client: str, rep: int, started: float) -> dict[str, Any]:
    limit = scenario.max_seconds + KILL_GRACE_SECONDS
    try:
        out, err = proc.communicate(timeout=max(1.0, started + limit - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        return {"client": client, "rep": rep, "failed": f"killed after {limit:.0f} s", "timed_out": True}
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = " | ".join(err.strip().splitlines()[-3:])
        return {"client": client, "rep": rep, "failed": f"exit code {proc.returncode}: {tail}"}
    result = json.loads(lines[-1])
    result["rep"] = rep
    result["process_seconds"] = time.monotonic() - started
    return result


def _describe(result: dict[str, Any]) -> str:
    if "failed" in result:
        return f"FAILED ({result['failed']})"
    parts = [f"{result['succeeded']}/{result['n_requested']} ok"]
    if result.get("samples_per_second"):
        parts.append(f"{result['samples_per_second']:,.0f}/s")
    parts.append(f"{result['client_cpu_us_per_sample']:,.0f} us CPU/sample")
    if "overhead_p50_ms" in result:
        parts.append(f"overhead p50 {result['overhead_p50_ms']:.0f} ms")
    if result["timed_out"]:
        parts.append("TIMED OUT")
    if result.get("capped"):
        parts.append(f"stopped at the {result['wall_seconds']:.0f} s limit")
    return ", ".join(parts)


def server_process(python: str, scenario: Scenario, rep: int) -> EmulatorProcess:
    """The scenario's server: the Rust emulator, or the slow Python one (slow_sail_server.py)."""
    if scenario.server == "slow":
        return EmulatorProcess(python, {"seed": rep}, script="slow_sail_server.py")
    return EmulatorProcess(python, scenario.emulator_config(rep))


def run_one(python: str, scenario: Scenario, client: str, rep: int) -> dict[str, Any]:
    with server_process(python, scenario, rep) as emulator:
        started = time.monotonic()
        result = _finish_client(_start_client(python, scenario, client, emulator), scenario, client, rep, started)
    log(f"{scenario.key} {client} #{rep}: {_describe(result)}")
    return result


def run_parallel(python: str, scenario: Scenario, runs: list[tuple[str, int]]) -> list[dict[str, Any]]:
    emulators = [server_process(python, scenario, rep) for _, rep in runs]
    try:
        started = time.monotonic()
        procs = [_start_client(python, scenario, client, emu) for (client, _), emu in zip(runs, emulators)]
        results = [_finish_client(p, scenario, client, rep, started) for p, (client, rep) in zip(procs, runs)]
    finally:
        for emulator in emulators:
            emulator.close()
    for result, (client, rep) in zip(results, runs):
        log(f"{scenario.key} {client} #{rep}: {_describe(result)}")
    return results


def run_scenario(python: str, scenario: Scenario) -> list[dict[str, Any]]:
    log(f"scenario {scenario.key}: {scenario.title} ({len(scenario.clients)} clients x {scenario.reps} runs)")
    if scenario.parallel:
        return run_parallel(python, scenario, [(c, rep) for rep in range(scenario.reps) for c in scenario.clients])
    results = []
    for rep in range(scenario.reps):
        for client in scenario.clients:
            # A client that timed out once is reported as such; its other runs would only
            # spend minutes reaching the same verdict.
            if any(r["client"] == client and r.get("timed_out") for r in results):
                continue
            results.append(run_one(python, scenario, client, rep))
    return results


def run_suite(name: str, suite: list[Scenario], only: list[str] | None,
              entry: Callable[[Scenario, list[dict[str, Any]]], dict[str, Any]],
              markdown: Callable[[dict[str, Any]], str]) -> None:
    """Run the scenarios of `suite` (those keyed in `only`, if given) one after another, and after
    each rewrite results/<name>.json and results/<name>.md; `entry` makes a scenario's report
    entry from its results. Prints the markdown at the end."""
    report: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "scenarios": {}}
    results_dir = HERE / "results"
    for scenario in suite:
        if only and scenario.key not in only:
            continue
        log(f"{name}: {scenario.key}")
        report["scenarios"][scenario.key] = entry(scenario, run_scenario(sys.executable, scenario))
        results_dir.mkdir(parents=True, exist_ok=True)
        (results_dir / f"{name}.json").write_text(json.dumps(report, indent=1))
        (results_dir / f"{name}.md").write_text(markdown(report))
    print(markdown(report))
