"""The issue's targets, checked against a run's summary. `met` is None when a figure is missing."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

CPU_US_MAX = 100
CPU_VS_OFFICIAL_MIN = 10
RATE_MIN = 10_000
FLOOR_FACTOR_MAX = 3
RSS_KB_PER_IN_FLIGHT_MAX = 4
OVERHEAD_FLOOR_MS = 25
OVERHEAD_FRACTION = 0.05
IMPORT_MS_MAX = 20
WHEEL_MB_MAX = 6


@dataclass
class Target:
    name: str
    measured: str
    met: bool | None


def _get(report: dict[str, Any], scenario: str, client: str) -> dict[str, Any]:
    return report["scenarios"].get(scenario, {}).get("clients", {}).get(client, {})


def _check(name: str, value: float | None, ok, fmt: str) -> Target:
    if value is None:
        return Target(name, "n/a", None)
    return Target(name, fmt.format(value), bool(ok(value)))


def evaluate(report: dict[str, Any]) -> list[Target]:
    lite = _get(report, "throughput", "sail-lite")
    official = _get(report, "throughput", "sail-sdk")
    floor = _get(report, "throughput", "python-floor")
    cpu = lite.get("client_cpu_us_per_sample")
    out = [
        _check(f"client CPU <= {CPU_US_MAX} µs/sample", cpu, lambda v: v <= CPU_US_MAX, "{:,.0f} µs"),
        _check(f">= {CPU_VS_OFFICIAL_MIN}x less CPU than the official SDK",
               official.get("client_cpu_us_per_sample") / cpu if cpu and official.get("client_cpu_us_per_sample") else None,
               lambda v: v >= CPU_VS_OFFICIAL_MIN, "{:,.1f}x"),
        _check(f">= {RATE_MIN:,} samples/s", lite.get("samples_per_second"), lambda v: v >= RATE_MIN, "{:,.0f}/s"),
        _check(f"within {FLOOR_FACTOR_MAX}x of the Python floor",
               cpu / floor["client_cpu_us_per_sample"] if cpu and floor.get("client_cpu_us_per_sample") else None,
               lambda v: v <= FLOOR_FACTOR_MAX, "{:,.1f}x the floor"),
    ]
    slow_lite = _get(report, "throughput-slow-server", "sail-lite").get("client_cpu_us_per_sample")
    slow_official = _get(report, "throughput-slow-server", "sail-sdk").get("client_cpu_us_per_sample")
    if slow_lite:
        out.append(_check(f">= {CPU_VS_OFFICIAL_MIN}x less CPU than the official SDK against the slow Python server",
                          slow_official / slow_lite if slow_official else None,
                          lambda v: v >= CPU_VS_OFFICIAL_MIN, "{:,.1f}x"))
    scale = _get(report, "scale", "sail-lite")
    if scale:
        n = report["scenarios"]["scale"]["parameters"]["n"]
        out += [
            _check(f"{n:,} in flight with <= {RSS_KB_PER_IN_FLIGHT_MAX} KB RSS each", scale.get("rss_per_in_flight_kb"),
                   lambda v: v <= RSS_KB_PER_IN_FLIGHT_MAX and scale.get("peak_in_flight", 0) >= n * 0.99,
                   "{:,.2f} KB (peak in flight " + f"{scale.get('peak_in_flight') or 0:,.0f})"),
            _check("bounded sockets", scale.get("peak_sockets"), lambda v: v <= 1024, "{:,.0f} at peak"),
            _check("no errors at scale", scale.get("errors_total"), lambda v: v == 0 and not scale.get("timed_out"), "{:,}"),
        ]
    for key, s in report["scenarios"].items():
        if s["kind"] != "poll":
            continue
        latency = s["parameters"]["latency_seconds"]
        bound = max(OVERHEAD_FLOOR_MS, OVERHEAD_FRACTION * latency * 1e3)
        c = s["clients"].get("sail-lite", {})
        out.append(_check(f"poll overhead p50 <= {bound:,.0f} ms at {latency:g} s", c.get("overhead_p50_ms"),
                          lambda v, b=bound: v <= b, "{:,.0f} ms" + f" ({num(c.get('polls_per_sample'))} polls)"))
    polls = sorted(((s["parameters"]["latency_seconds"], s["clients"].get("sail-lite", {}).get("polls_per_sample"))
                    for s in report["scenarios"].values() if s["kind"] == "poll"), key=lambda x: x[0])
    polls = [(lat, p) for lat, p in polls if p]
    if len(polls) >= 2:
        (l0, p0), (l1, p1) = polls[0], polls[-1]
        # O(log): a response log(l1/l0) times longer costs at most ~that many times more polls, far less than l1/l0.
        out.append(Target(f"O(log) polls per sample", f"{l1 / l0:,.0f}x longer responses: {p1 / p0:,.1f}x the polls",
                          p1 / p0 <= max(2.0, math.log2(l1 / l0))))
    faults = _get(report, "faults", "sail-lite")
    if faults:
        out += [
            _check("every fault-injected sample succeeds", faults.get("errors_total"), lambda v: v == 0,
                   "{:,} errors in " + f"{faults.get('started_total', 0):,}"),
            _check("none created twice", faults.get("duplicates_total"), lambda v: v == 0, "{:,} duplicates"),
        ]
    cs = report.get("cold_start", {}).get("packages", {}).get("sail_lite")
    if cs:
        out += [
            _check(f"import sail_lite <= {IMPORT_MS_MAX} ms", cs["import_ms"], lambda v: v <= IMPORT_MS_MAX, "{:,.1f} ms"),
            _check(f"wheel <= {WHEEL_MB_MAX} MB", cs["wheel_bytes"] and cs["wheel_bytes"] / 1e6, lambda v: v <= WHEEL_MB_MAX, "{:,.2f} MB"),
            _check("zero required dependencies", len(cs["required_dependencies"]), lambda v: v == 0, "{}"),
        ]
    return out


def num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.1f}"
