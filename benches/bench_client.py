"""One client, one scenario, one process: `python bench_client.py '<spec json>'`.

Prints one JSON line: what the run measured in this process (wall time, CPU of all threads,
RSS, sockets, errors, latencies) plus the emulator's CPU and request counters over the same
interval. The spec names the client (clients.CLIENTS), the scenario and its sizes, and the
emulator's address and pid (the run_benchmarks.py orchestrator writes it)."""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import urllib.request
from typing import Any

import probes
import workload
from clients import ClientConfig, open_client

# Enough for pools and runtimes to reach steady state, without making a slow client's run long.
WARMUP_SECONDS = 5.0


def emulator_stats(base_url: str, reset: bool = False) -> dict[str, Any]:
    req = urllib.request.Request(base_url + ("/_stats/reset" if reset else "/_stats"), method="POST" if reset else "GET")
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def measure(spec: dict[str, Any], prompts: list[Any]) -> dict[str, Any]:
    cfg = ClientConfig(
        base_url=spec["base_url"], api_key=spec["api_key"], model=spec["model"],
        max_tokens=spec["max_tokens"], window=spec["window"],
    )
    client = await open_client(spec["client"], cfg)
    scenario = spec["scenario"]
    n = spec["n"]
    warmup = spec.get("warmup", 0)
    if warmup:
        # Connection pools grown, code paths warm, runtimes built: steady state is what's measured.
        await workload.run_bounded(client.sample, prompts, warmup, spec["concurrency"], WARMUP_SECONDS, workload.RunLog())
    emulator_stats(spec["base_url"], reset=True)

    log = workload.RunLog()
    rss_before = probes.current_rss_kb()
    emu_cpu0 = probes.process_cpu_seconds(spec["emulator_pid"])
    threads0 = probes.thread_cpu_seconds()
    cpu0 = probes.cpu_seconds()
    with probes.PeakSampler(lambda: log.in_flight, interval=spec.get("sample_interval", 0.25)) as peaks:
        if scenario in ("throughput", "faults"):
            await workload.run_bounded(client.sample, prompts, n, spec["concurrency"], spec["max_seconds"], log)
        elif scenario == "scale":
            await workload.run_all_at_once(client.sample, prompts, n, spec["max_seconds"], log)
        elif scenario == "poll":
            await workload.run_all_at_once(client.sample, prompts, n, spec["max_seconds"], log,
                                           spacing=spec["spacing"], keep_spans=True)
        else:
            raise ValueError(f"unknown scenario {scenario!r}")
    cpu = probes.cpu_seconds() - cpu0
    threads = {name: seconds - threads0.get(name, 0.0) for name, seconds in probes.thread_cpu_seconds().items()}
    emu_cpu = probes.process_cpu_seconds(spec["emulator_pid"]) - emu_cpu0
    server = emulator_stats(spec["base_url"])
    await client.aclose()

    started = max(log.started, 1)
    result: dict[str, Any] = {
        "client": spec["client"],
        "scenario": scenario,
        "n_requested": n,
        "started": log.started,
        "succeeded": log.succeeded,
        "errors": sum(log.errors.values()),
        "error_kinds": log.errors,
        "timed_out": log.timed_out,
        "capped": log.capped,
        "wall_seconds": log.wall_seconds,
        "samples_per_second": log.succeeded / log.wall_seconds if log.wall_seconds else None,
        "client_cpu_us_per_sample": cpu / started * 1e6,
        "emulator_cpu_us_per_sample": emu_cpu / started * 1e6,
        # Where the client's CPU went, by thread name (µs per sample; threads that ended are missing).
        "thread_cpu_us_per_sample": {k: round(v / started * 1e6, 1) for k, v in threads.items() if v > 0},
        "http_requests_per_sample": server["requests_total"] / started,
        "polls_per_sample": server["polls"] / started,
        "creates": server["creates"],
        # Samples started twice server-side: keyed duplicates, plus creates beyond one per sample
        # (a retried create without an idempotency key after the server had accepted it).
        "duplicates": server["duplicate_samples"] + max(0, server["creates"] - log.started),
        "idempotent_replays": server["idempotent_replays"],
        "faults_injected": server["faults_total"],
        "output_tokens_per_sample": log.output_tokens / max(log.succeeded, 1),
        "peak_rss_mb": probes.peak_rss_kb() / 1024,
        "rss_before_mb": rss_before / 1024,
        "peak_rss_during_mb": peaks.peak_rss_kb / 1024,
        "peak_in_flight": peaks.peak_in_flight,
        "rss_per_in_flight_kb": (peaks.peak_rss_kb - rss_before) / peaks.peak_in_flight if peaks.peak_in_flight else None,
        "peak_sockets": peaks.peak_sockets,
        "emulator": server,
    }
    if log.spans:
        # Caller-side delay past the response's completion: end-to-end time minus the
        # emulator's configured (jitter-free) latency. Includes the create round trip.
        overhead = [end - start - spec["latency_seconds"] for start, end in log.spans]
        result["overhead_p50_ms"] = percentile(overhead, 0.50) * 1e3
        result["overhead_p99_ms"] = percentile(overhead, 0.99) * 1e3
        result["overhead_mean_ms"] = statistics.fmean(overhead) * 1e3
    if spec["client"].startswith("sail-lite"):
        import sail_lite

        result["engine_metrics"] = sail_lite.engine_metrics()
    return result


def main() -> None:
    spec = json.loads(sys.argv[1])
    probes.raise_fd_limit()
    prompts = workload.make_prompts(spec["prompt_tokens"])
    result = asyncio.run(measure(spec, prompts))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
