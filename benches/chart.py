"""The one-glance chart: six panels (CPU, rate, poll overhead, memory at scale, faults, cold
start), sail-lite in blue, the official SDK in red, every bar labelled with its value and its
ratio to the official SDK in the same run. matplotlib, from the bench environment only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import targets  # noqa: E402

SHORT = {
    "python-floor": "Python floor (no I/O)",
    "sail-lite": "sail-lite",
    "sail-lite-completions": "sail-lite /completions",
    "aiohttp": "aiohttp loop",
    "sail-sdk": "official Sail SDK",
    "openai-sdk": "OpenAI SDK",
    "loadgen": "emulator capacity",
}
COLORS = {
    "python-floor": "#9ccc9c", "sail-lite": "#1f5fbf", "sail-lite-completions": "#6b9be0",
    "aiohttp": "#9a9a9a", "sail-sdk": "#d62728", "openai-sdk": "#c7a04a", "loadgen": "#444444",
}
OFFICIAL = "sail-sdk"


def _fmt(v: float) -> str:
    return f"{v:,.0f}" if v >= 10 else f"{v:,.1f}" if v >= 1 else f"{v:.2f}"


def _bars(ax, items: list[tuple[str, float | None, str]], title: str, unit: str, log: bool = True,
          target: float | None = None, target_label: str = "") -> None:
    """Horizontal bars, top to bottom in the given order; missing values shown as 'n/a'."""
    items = list(reversed(items))
    ys = range(len(items))
    values = [v if v else 0 for _, v, _ in items]
    ax.barh(list(ys), values, color=[COLORS.get(k, "#777") for k, _, _ in items])
    ax.set_yticks(list(ys), [SHORT.get(k, k) for k, _, _ in items])
    if log:
        ax.set_xscale("log")
    positive = [v for v in values if v > 0] or [1]
    span = positive + ([target] if target else [])
    ax.set_xlim(min(span) / 3 if log else 0, max(span) * (30 if log else 1.45))
    for y, (_, v, note) in zip(ys, items):
        label = "n/a" if not v else f"{_fmt(v)} {unit}"
        ax.text(v if v else (min(positive) / 2.5 if log else 0), y, f"  {label}  {note}".rstrip(), va="center", fontsize=8)
    if target:
        ax.axvline(target, color="#1f5fbf", ls="--", lw=1)
        ax.text(target, len(items) - 0.45, f" {target_label}", color="#1f5fbf", fontsize=7, va="bottom")
    ax.set_title(title, fontsize=10, loc="left", fontweight="bold")
    ax.tick_params(axis="y", labelsize=8)
    ax.tick_params(axis="x", labelsize=7)


def _vs_official(value: float | None, ref: float | None, less_is_better: bool) -> str:
    if not value or not ref:
        return ""
    r = ref / value if less_is_better else value / ref
    if abs(r - 1) < 0.05:
        return ""
    return f"({r:,.1f}x {'less' if less_is_better else 'faster'})" if r >= 1 else f"({1 / r:,.1f}x {'more' if less_is_better else 'slower'})"


def draw(report: dict[str, Any], path: Path) -> None:
    fig, axes = plt.subplots(2, 3, figsize=(18, 9.5))
    scen = report["scenarios"]

    tp = scen.get("throughput", {}).get("clients", {})
    ref = tp.get(OFFICIAL, {})
    _bars(axes[0][0], [(k, c["client_cpu_us_per_sample"], _vs_official(c["client_cpu_us_per_sample"], ref.get("client_cpu_us_per_sample"), True))
                       for k, c in tp.items()],
          "Client CPU per sample (less is better)", "µs", target=targets.CPU_US_MAX, target_label="target 100 µs")

    rate_items = [(k, c["samples_per_second"], _vs_official(c["samples_per_second"], ref.get("samples_per_second"), False))
                  for k, c in tp.items() if k != "python-floor"]
    cap = report.get("emulator_capacity") or {}
    if cap.get("samples_per_second"):
        rate_items.insert(0, ("loadgen", cap["samples_per_second"], "(Rust load generator)"))
    _bars(axes[0][1], rate_items, "Samples per second, latency 0 (more is better)", "/s",
          target=targets.RATE_MIN, target_label="target 10,000/s")

    ax = axes[0][2]
    polls = sorted((s for s in scen.values() if s["kind"] == "poll"), key=lambda s: s["parameters"]["latency_seconds"])
    names = [n for n in ("sail-lite", "aiohttp", "openai-sdk", "sail-sdk") if any(n in s["clients"] for s in polls)]
    width = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        xs, ys = [], []
        for j, s in enumerate(polls):
            c = s["clients"].get(name)
            if c and c.get("overhead_p50_ms") is not None:
                xs.append(j + (i - (len(names) - 1) / 2) * width)
                ys.append(max(c["overhead_p50_ms"], 0.1))
        ax.bar(xs, ys, width, color=COLORS[name], label=SHORT[name])
        for x, y in zip(xs, ys):
            ax.text(x, y * 1.15, _fmt(y), ha="center", fontsize=7, rotation=90, va="bottom")
    for j, s in enumerate(polls):
        lat = s["parameters"]["latency_seconds"]
        bound = max(targets.OVERHEAD_FLOOR_MS, targets.OVERHEAD_FRACTION * lat * 1e3)
        ax.hlines(bound, j - 0.45, j + 0.45, colors="#1f5fbf", linestyles="--", lw=1)
    ax.set_xticks(range(len(polls)), [f"{s['parameters']['latency_seconds']:g} s responses" for s in polls], fontsize=8)
    ax.set_yscale("log")
    ax.set_ylim(top=ax.get_ylim()[1] * 8)
    ax.set_ylabel("ms after completion (p50)", fontsize=8)
    ax.legend(fontsize=7, loc="upper left", ncols=2)
    ax.set_title("Poll overhead p50 (less is better; dashed: target)", fontsize=10, loc="left", fontweight="bold")

    sc = scen.get("scale", {})
    sc_clients = sc.get("clients", {})
    n_scale = sc.get("parameters", {}).get("n", 0)
    _bars(axes[1][0], [(k, c["rss_per_in_flight_kb"],
                        ("timed out, " if c["timed_out"] else "") + f"{c['errors_total']:,} errors, {_fmt(c['peak_sockets'] or 0)} sockets")
                       for k, c in sc_clients.items()],
          f"RSS per in-flight sample, {n_scale:,} at once (less is better)", "KB",
          target=targets.RSS_KB_PER_IN_FLIGHT_MAX, target_label="target 4 KB")

    fl = scen.get("faults", {}).get("clients", {})
    _bars(axes[1][1], [(k, 100 * c["succeeded_total"] / c["started_total"] if c["started_total"] else None,
                        f"{c['duplicates_total']:,} duplicates") for k, c in fl.items()],
          "Faults: samples that succeeded (429 10%, 5xx 5%, drops 1%)", "%", log=False)

    cs = report.get("cold_start", {}).get("packages", {})
    _bars(axes[1][2], [({"sail_lite": "sail-lite", "sail": "sail-sdk", "openai": "openai-sdk", "aiohttp": "aiohttp"}[m],
                        max(p["import_ms"], 0.1), f"wheel {p['wheel_bytes'] / 1e6:,.1f} MB" if p["wheel_bytes"] else "")
                       for m, p in cs.items()],
          "import time (less is better)", "ms", target=targets.IMPORT_MS_MAX, target_label="target 20 ms")

    m = report["machine"]
    fig.suptitle(f"sail-lite vs. the alternatives, one run against the same local Sail emulator — {report['date']}, "
                 f"{m['nproc']} cores ({m['cpu']}), medians", fontsize=12)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    fig.savefig(path, dpi=110)
    plt.close(fig)
