"""Sail-like time scales, all clients side by side: `python realtime.py [--only KEY ...]` with the
bench environment's Python. Writes results/realtime.json and results/realtime.md (a table per
scenario: HTTP requests per sample, client CPU per sample, lateness p50/p99 as a fraction of
each sample's service time as the emulator measured it, requests/s at the server). A scenario run
more than once reports each client's medians over its runs, and every run's client CPU."""

from __future__ import annotations

import argparse
import dataclasses
import statistics
from typing import Any

import scenarios
from runner import run_suite


def row(result: dict[str, Any]) -> dict[str, Any]:
    server = result.get("emulator", {})
    lateness = server.get("poll_lateness", {})
    started = max(result.get("started", 0), 1)
    wall = result.get("wall_seconds") or 0
    return {
        "client": result.get("client"),
        "failed": result.get("failed"),
        "succeeded": result.get("succeeded"),
        "errors": result.get("errors"),
        "timed_out": result.get("timed_out"),
        "requests_per_sample": server.get("requests_total", 0) / started,
        "client_cpu_us_per_sample": result.get("client_cpu_us_per_sample"),
        "lateness_p50": lateness.get("p50"),
        "lateness_p99": lateness.get("p99"),
        "lateness_count": lateness.get("count"),
        "mean_service_seconds": lateness.get("mean_service_seconds"),
        "server_requests_per_second": server.get("requests_total", 0) / wall if wall else None,
        "wall_seconds": wall,
        "peak_in_flight": result.get("peak_in_flight"),
        "harness_cpu_us_per_sample": result.get("harness_cpu_us_per_sample"),
        "gc_cpu_us_per_sample": result.get("gc_cpu_us_per_sample"),
        "gc_collections": result.get("gc_collections"),
        "thread_cpu_us_per_sample": result.get("thread_cpu_us_per_sample"),
        "thread_wakeups_per_sample": result.get("thread_wakeups_per_sample"),
        "connections_opened": server.get("connections_accepted"),
        "warmup_succeeded": result.get("warmup_succeeded"),
        "warmup_wall_seconds": result.get("warmup_wall_seconds"),
        # Completed responses by how many polls found them pending first, and those polls by
        # when they came (fraction of the service time, 0.05 bins): where the requests went.
        "pending_polls_per_response": server.get("pending_polls_per_response"),
        "pending_poll_position": server.get("pending_poll_position"),
    }


# The per-run figures a client's row reports as medians over its runs.
MEDIAN_FIELDS = ["requests_per_sample", "client_cpu_us_per_sample", "lateness_p50", "lateness_p99",
                 "server_requests_per_second", "wall_seconds"]


def client_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per client, in first-run order: a client that ran once keeps its run's row; one
    that ran several times gets the medians of its completed runs, on top of the run with the
    median client CPU (whose notes it keeps), and `cpu_runs` (every completed run's CPU)."""
    by_client: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_client.setdefault(r["client"], []).append(r)
    out = []
    for runs in by_client.values():
        done = [r for r in runs if not r.get("failed") and not r.get("timed_out")]
        if len(runs) == 1 or not done:
            out.append(runs[0])
            continue
        merged = dict(sorted(done, key=lambda r: r["client_cpu_us_per_sample"])[(len(done) - 1) // 2])
        for key in MEDIAN_FIELDS:
            values = [r[key] for r in done if r.get(key) is not None]
            merged[key] = statistics.median(values) if values else None
        merged["cpu_runs"] = [round(r["client_cpu_us_per_sample"]) for r in done]
        merged["runs"] = len(runs)
        out.append(merged)
    return out


def histogram_line(r: dict[str, Any]) -> str:
    counts = r.get("pending_polls_per_response") or []
    positions = r.get("pending_poll_position") or []
    if not sum(counts):
        return ""
    last = max(i for i, c in enumerate(counts) if c)
    early = sum(positions[:15]) / max(sum(counts), 1)
    warm = f" (after a warm-up of {r['warmup_succeeded']} samples)" if r.get("warmup_succeeded") else ""
    harness = r.get("harness_cpu_us_per_sample")
    runs = (f" (medians of {len(r['cpu_runs'])} of {r['runs']} runs; client CPU of each, in run order: {r['cpu_runs']} µs;"
            " notes from the median-CPU run)") if r.get("cpu_runs") else ""
    return (f"{r['client']}{warm}{runs}: peak in flight {r.get('peak_in_flight')}; responses by pending polls first (0, 1, ...): "
            f"{counts[:last + 1]}; pending polls before 0.75x the service time: {early:.2f} per response"
            + ("" if harness is None else f"; harness sampler CPU (not counted) {harness:.0f} µs/sample")
            + gc_note(r))


def gc_note(r: dict[str, Any]) -> str:
    """Of the client CPU, Python's garbage collector (a fresh process's first full collection
    walks everything its imports made) and the threads (engine vs Python)."""
    gc_us, gens = r.get("gc_cpu_us_per_sample"), r.get("gc_collections")
    threads = r.get("thread_cpu_us_per_sample") or {}
    parts = []
    if gc_us is not None and gens:
        parts.append(f"Python GC {gc_us:.0f} µs/sample ({gens[2]} full collections)")
    if threads:
        parts.append("by thread " + ", ".join(f"{k} {v:.0f}" for k, v in sorted(threads.items())))
    if r.get("connections_opened") is not None:
        parts.append(f"connections opened {r['connections_opened']}")
    wakeups = r.get("thread_wakeups_per_sample") or {}
    if wakeups:
        parts.append("wake-ups/sample " + ", ".join(f"{k} {v:.1f}" for k, v in sorted(wakeups.items())))
    return "; " + "; ".join(parts) if parts else ""


def markdown(report: dict[str, Any]) -> str:
    lines = []
    for key, sc in report["scenarios"].items():
        lines += [f"#### {sc['title']} (`{key}`)", "",
                  "| client | ok | requests/sample | client CPU µs/sample | lateness p50 | lateness p99 | server req/s | wall s |",
                  "|---|---|---|---|---|---|---|---|"]
        rows = client_rows(sc["rows"])
        for r in rows:
            if r.get("failed"):
                lines.append(f"| {r['client']} | failed: {str(r['failed']).splitlines()[-1][:160]} | | | | | | |")
                continue
            pct = lambda x: "n/a" if x is None else f"{100 * x:.1f}%"
            cpu = r["client_cpu_us_per_sample"]
            rps = r["server_requests_per_second"]
            lines.append(f"| {r['client']} | {r['succeeded']}{' (timed out)' if r['timed_out'] else ''} | {r['requests_per_sample']:.2f} | "
                         f"{cpu:.0f} | {pct(r['lateness_p50'])} | {pct(r['lateness_p99'])} | {0 if rps is None else rps:.0f} | {r['wall_seconds']:.1f} |")
        lines.append("")
        notes = [line for line in map(histogram_line, rows) if line]
        if notes:
            lines += [f"- {line}" for line in notes] + [""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", nargs="*", help="scenario keys (default: all)")
    parser.add_argument("--clients", nargs="*", help="of each scenario's clients, only these (default: all)")
    args = parser.parse_args()
    suite = scenarios.realtime()
    if args.clients:
        suite = [dataclasses.replace(sc, clients=[c for c in sc.clients if c in args.clients]) for sc in suite]

    def entry(scenario: scenarios.Scenario, results: list[dict[str, Any]]) -> dict[str, Any]:
        return {"title": scenario.title, "latency": scenario.latency, "n": scenario.n,
                "rows": [row(r) for r in results], "raw": results}

    run_suite("realtime", suite, args.only, entry, markdown)


if __name__ == "__main__":
    main()
