"""Per-run results -> one line per (scenario, client): medians over the runs for rates,
costs and latencies; totals for errors and duplicates (one is already too many)."""

from __future__ import annotations

import statistics
from typing import Any

MEDIAN_KEYS = (
    "samples_per_second", "client_cpu_us_per_sample", "emulator_cpu_us_per_sample",
    "http_requests_per_sample", "polls_per_sample", "peak_rss_mb", "rss_before_mb",
    "peak_rss_during_mb", "rss_per_in_flight_kb", "peak_sockets", "peak_in_flight",
    "overhead_p50_ms", "overhead_p99_ms", "wall_seconds", "output_tokens_per_sample",
)
TOTAL_KEYS = ("started", "succeeded", "errors", "duplicates", "idempotent_replays", "faults_injected")


def summarize_client(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in runs if "failed" not in r]
    summary: dict[str, Any] = {
        "runs": len(runs),
        "measured_runs": len(ok),
        "failures": [r["failed"] for r in runs if "failed" in r],
        "timed_out": any(r.get("timed_out") for r in runs),
        "capped": any(r.get("capped") for r in runs),
        "fd_exhausted": any(r.get("fd_exhausted") for r in runs),
        "fd_limit": next((r["fd_limit"] for r in runs if "fd_limit" in r), None),
        "n_requested": runs[0].get("n_requested") if runs else None,
    }
    for key in MEDIAN_KEYS:
        values = [r[key] for r in ok if r.get(key) is not None]
        summary[key] = statistics.median(values) if values else None
    for key in TOTAL_KEYS:
        summary[key + "_total"] = sum(r.get(key, 0) for r in ok)
    threads: dict[str, list[float]] = {}
    for r in ok:
        for name, us in r.get("thread_cpu_us_per_sample", {}).items():
            threads.setdefault(name, []).append(us)
    summary["thread_cpu_us_per_sample"] = {name: statistics.median(v) for name, v in threads.items()}
    kinds: dict[str, int] = {}
    for r in ok:
        for kind, count in r.get("error_kinds", {}).items():
            kinds[kind] = kinds.get(kind, 0) + count
    summary["error_kinds"] = kinds
    return summary


def summarize(results: list[dict[str, Any]], clients: list[str]) -> dict[str, dict[str, Any]]:
    return {c: summarize_client([r for r in results if r["client"] == c]) for c in clients
            if any(r["client"] == c for r in results)}
