"""One client, one scenario, one process: `python bench_client.py '<spec json>'`.

Prints one JSON line: what the run measured in this process (wall time, CPU of all threads,
RSS, sockets, errors, latencies) plus the emulator's CPU and request counters over the same
interval. The spec names the client (clients.CLIENTS), the scenario and its sizes, and the
emulator's address and pid (the run_benchmarks.py orchestrator writes it).

A client whose event loop is too busy to even notice its time limit (the OpenAI SDK with
50,000 requests in flight) is cut off by a watchdog thread, which prints what was measured
so far and ends the process."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import json
import os
import statistics
import sys
import threading
import time
import urllib.request
from typing import Any

import probes
import workload
from clients import ClientConfig, open_client

# Enough for pools and runtimes to reach steady state, without making a slow client's run long.
WARMUP_SECONDS = 5.0
WARMUP_CONCURRENCY = 256  # sail-lite's and the aiohttp loop's connection pool size
# How long past its time limit a run may take to wind down before the watchdog reports it.
WATCHDOG_GRACE_SECONDS = 20.0
GC_TIMER = probes.GcTimer()


def emulator_stats(base_url: str, reset: bool = False) -> dict[str, Any]:
    req = urllib.request.Request(base_url + ("/_stats/reset" if reset else "/_stats"), method="POST" if reset else "GET")
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


class Measurement:
    """The counters of one measured run, started when it is created; `result()` turns them
    into the printed JSON (callable from the watchdog thread while the run is still going)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.log = workload.RunLog()
        self.started_at = time.perf_counter()
        self.rss_before = probes.current_rss_kb()
        self.emu_cpu0 = probes.process_cpu_seconds(spec["emulator_pid"])
        self.threads0 = probes.thread_cpu_seconds()
        self.wakeups0 = probes.thread_wakeups()
        self.cpu0 = probes.cpu_seconds()
        self.gc0 = GC_TIMER.snapshot()
        self.peaks = probes.PeakSampler(lambda: self.log.in_flight, interval=spec.get("sample_interval", 0.25))

    def result(self, cut_off: bool = False) -> dict[str, Any]:
        spec, log, peaks = self.spec, self.log, self.peaks
        # The client's CPU: the whole process's, less the harness's sampling thread.
        harness_cpu = peaks.cpu_seconds
        cpu = probes.cpu_seconds() - self.cpu0 - harness_cpu
        threads = {name: s - self.threads0.get(name, 0.0) for name, s in probes.thread_cpu_seconds().items()}
        wakeups = {name: n - self.wakeups0.get(name, 0) for name, n in probes.thread_wakeups().items()}
        emu_cpu = probes.process_cpu_seconds(spec["emulator_pid"]) - self.emu_cpu0
        gc_seconds, gc_collections = GC_TIMER.snapshot()
        server = emulator_stats(spec["base_url"])
        wall = log.wall_seconds or time.perf_counter() - self.started_at
        started = max(log.started, 1)
        result: dict[str, Any] = {
            "client": spec["client"],
            "scenario": spec["scenario"],
            "n_requested": spec["n"],
            "started": log.started,
            "succeeded": log.succeeded,
            "errors": sum(log.errors.values()),
            "error_kinds": dict(log.errors),
            "timed_out": log.timed_out or cut_off,
            "cut_off_by_watchdog": cut_off,
            "capped": log.capped,
            "wall_seconds": wall,
            "samples_per_second": log.succeeded / wall if wall else None,
            "client_cpu_us_per_sample": cpu / started * 1e6,
            "harness_cpu_us_per_sample": harness_cpu / started * 1e6,
            "emulator_cpu_us_per_sample": emu_cpu / started * 1e6,
            # Where the client's CPU went, by thread name (µs per sample; threads that ended are missing).
            "thread_cpu_us_per_sample": {k: round(v / started * 1e6, 1) for k, v in threads.items() if v > 0},
            # How often each thread slept and was woken again, per sample ("python" includes the
            # harness's sampler thread, 4 wake-ups a second).
            "thread_wakeups_per_sample": {k: round(n / started, 2) for k, n in wakeups.items() if n > 0},
            # Of the client's CPU, Python's garbage collector (any thread), and its collections by generation.
            "gc_cpu_us_per_sample": (gc_seconds - self.gc0[0]) / started * 1e6,
            "gc_collections": [b - a for a, b in zip(self.gc0[1], gc_collections)],
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
            "rss_before_mb": self.rss_before / 1024,
            "peak_rss_during_mb": peaks.peak_rss_kb / 1024,
            "peak_in_flight": peaks.peak_in_flight,
            "rss_per_in_flight_kb": (peaks.peak_rss_kb - self.rss_before) / peaks.peak_in_flight if peaks.peak_in_flight else None,
            "peak_sockets": peaks.peak_sockets,
            "fd_limit": probes.raise_fd_limit(),
            "fd_exhausted": peaks.fd_exhausted,
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


def start_watchdog(measurement: Measurement, seconds: float) -> threading.Event:
    """After `seconds`, print the partial result and end the process; set the event to disarm."""
    disarmed = threading.Event()

    def watch() -> None:
        if disarmed.wait(seconds):
            return
        print(json.dumps(measurement.result(cut_off=True)), flush=True)
        os._exit(0)

    threading.Thread(target=watch, name="watchdog", daemon=True).start()
    return disarmed


async def measure(spec: dict[str, Any], prompts: list[Any]) -> dict[str, Any]:
    cfg = ClientConfig(
        base_url=spec["base_url"], api_key=spec["api_key"], model=spec["model"],
        max_tokens=spec["max_tokens"], window=spec["window"],
    )
    client = await open_client(spec["client"], cfg)
    scenario = spec["scenario"]
    warmup = workload.RunLog()
    if spec.get("warmup"):
        # Connection pools grown, code paths warm, runtimes built: steady state is what's measured.
        # With `warmup_window`, the warm-up runs in another completion window (its own client):
        # the process, engine and pools are warm, but nothing is learned for the measured window.
        warm_client = client
        if spec.get("warmup_window"):
            warm_client = await open_client(spec["client"], dataclasses.replace(cfg, window=spec["warmup_window"]))
        concurrency = min(spec["concurrency"], spec.get("warmup_concurrency", WARMUP_CONCURRENCY))
        await workload.run_bounded(warm_client.sample, prompts, spec["warmup"], concurrency,
                                   spec.get("warmup_seconds", WARMUP_SECONDS), warmup)
        if warm_client is not client:
            await warm_client.aclose()
    emulator_stats(spec["base_url"], reset=True)
    # A fresh process's first full collection walks everything its imports made (~100 ms here):
    # start-up, not sampling, and whether it fell inside the measured interval was luck (one
    # client's cold run paid it, another's not). Collected here, unmeasured, for every client.
    gc.collect()

    m = Measurement(spec)
    disarm = start_watchdog(m, spec["max_seconds"] + WATCHDOG_GRACE_SECONDS)
    with m.peaks:
        if scenario in ("throughput", "faults"):
            await workload.run_bounded(client.sample, prompts, spec["n"], spec["concurrency"], spec["max_seconds"], m.log)
        elif scenario == "scale":
            await workload.run_all_at_once(client.sample, prompts, spec["n"], spec["max_seconds"], m.log)
        elif scenario == "poll":
            await workload.run_all_at_once(client.sample, prompts, spec["n"], spec["max_seconds"], m.log,
                                           spacing=spec["spacing"], keep_spans=True)
        else:
            raise ValueError(f"unknown scenario {scenario!r}")
    disarm.set()
    result = m.result()
    result["warmup_succeeded"] = warmup.succeeded
    result["warmup_wall_seconds"] = warmup.wall_seconds
    await client.aclose()
    return result


def main() -> None:
    spec = json.loads(sys.argv[1])
    probes.raise_fd_limit()
    prompts = workload.make_prompts(spec["prompt_tokens"])
    result = asyncio.run(measure(spec, prompts))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
