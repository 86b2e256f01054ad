"""The transport comparison of issue 11: sail-lite's hand-written HTTP/1.1 framing (rust/src/http1.rs)
against the same engine over hyper's low-level client (rust/src/hyper_pool.rs), in one run:
`python transport.py [--only KEY ...]` with the bench environment's Python. Runs alternate
between the two per rep; the tables give medians over reps. Writes results/transport.{json,md}."""

from __future__ import annotations

import argparse
import statistics
from typing import Any

import scenarios
from runner import run_suite


def _median(results: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in results if r.get(key) is not None and not r.get("failed")]
    return statistics.median(values) if values else None


def summarize(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for client in scenarios.TRANSPORT_CLIENTS:
        mine = [r for r in results if r.get("client") == client]
        rows.append({
            "client": client,
            "runs": len(mine),
            "failed_runs": sum(1 for r in mine if r.get("failed") or r.get("errors")),
            "cpu_us": _median(mine, "client_cpu_us_per_sample"),
            "cpu_us_all": [round(r["client_cpu_us_per_sample"]) for r in mine if "client_cpu_us_per_sample" in r],
            "samples_per_second": _median(mine, "samples_per_second"),
            "wall_seconds": _median(mine, "wall_seconds"),
        })
    return rows


def markdown(report: dict[str, Any]) -> str:
    lines = []
    for key, sc in report["scenarios"].items():
        lines += [f"#### {sc['title']} (`{key}`, median of {sc['reps']})", "",
                  "| HTTP client | client CPU µs/sample (each run) | samples/s | failed runs |", "|---|---|---|---|"]
        for r in sc["rows"]:
            cpu = "n/a" if r["cpu_us"] is None else f"{r['cpu_us']:.0f} ({', '.join(map(str, r['cpu_us_all']))})"
            rate = "n/a" if r["samples_per_second"] is None else f"{r['samples_per_second']:,.0f}"
            lines.append(f"| {r['client']} | {cpu} | {rate} | {r['failed_runs']} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", nargs="*", help="scenario keys (default: all)")
    args = parser.parse_args()

    def entry(scenario: scenarios.Scenario, results: list[dict[str, Any]]) -> dict[str, Any]:
        return {"title": scenario.title, "reps": scenario.reps, "rows": summarize(results), "raw": results}

    run_suite("transport", scenarios.transport(), args.only, entry, markdown)


if __name__ == "__main__":
    main()
