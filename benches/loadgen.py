"""The emulator's own capacity on loopback: its Rust load generator (`sail-loadgen`, no Python
anywhere) running the create + poll loop against an emulator in another process, set up as
in the throughput scenario (2 server worker threads, latency 0)."""

from __future__ import annotations

import json
import statistics
import subprocess
from pathlib import Path
from typing import Any

from emulator_process import EmulatorProcess
from scenarios import MAX_TOKENS, fixed_latency
from runner import log

ROOT = Path(__file__).resolve().parent.parent
BINARY = ROOT / "target" / "release" / "sail-loadgen"
# As many connections as sail-lite's default pool, and the same two threads its engine has.
CONCURRENCY = 256
THREADS = 2


def _one_run(python: str, requests: int, seconds: float) -> dict[str, Any]:
    with EmulatorProcess(python, {"worker_threads": 2, "latency": fixed_latency(0)}) as emulator:
        proc = subprocess.run(
            [str(BINARY), "--url", emulator.base_url, "--api-key", emulator.api_key, "--requests", str(requests),
             "--duration", str(seconds), "--concurrency", str(CONCURRENCY), "--threads", str(THREADS),
             "--max-tokens", str(MAX_TOKENS)],
            capture_output=True, text=True, timeout=seconds + 60,
        )
    if proc.returncode != 0:
        return {"failed": f"exit code {proc.returncode}: {proc.stderr.strip()[-300:]}"}
    return json.loads(proc.stdout)


def measure(python: str, quick: bool = False) -> dict[str, Any]:
    if not BINARY.exists():
        return {"reason": f"{BINARY.relative_to(ROOT)} is not built (make -C benches loadgen)"}
    runs = [_one_run(python, 40_000 if quick else 200_000, 5 if quick else 15) for _ in range(1 if quick else 3)]
    ok = [r for r in runs if "failed" not in r]
    for r in runs:
        log(f"loadgen: {r.get('failed') or str(r['samples_per_s']) + ' samples/s, ' + str(r['requests_per_s']) + ' requests/s'}")
    if not ok:
        return {"reason": runs[0]["failed"]}
    return {
        "samples_per_second": statistics.median(r["samples_per_s"] for r in ok),
        "requests_per_second": statistics.median(r["requests_per_s"] for r in ok),
        "http_requests_per_sample": statistics.median(r["requests"] / max(r["samples_completed"], 1) for r in ok),
        "errors": sum(r["errors"] + r["non_2xx"] for r in ok),
        "runs": runs,
        "note": f"{CONCURRENCY} connections, 4-token prompts",
    }
