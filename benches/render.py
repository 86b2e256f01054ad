"""summary.json -> the Markdown tables (printed, written next to the summary, and spliced into
BENCHMARKS.md between its result markers on a full run) and the PNG chart."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import cold_start
import targets

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
BEGIN, END = "<!-- bench:results:begin -->", "<!-- bench:results:end -->"
OFFICIAL = "sail-sdk"
SAIL_LITE = ("sail-lite", "sail-lite-completions")

LABELS = {
    "python-floor": "Python floor (no I/O)",
    "sail-lite": "**sail-lite** SailTokenCompleter",
    "sail-lite-completions": "**sail-lite** OpenAICompatibleTokenCompleter (/v1/completions)",
    "aiohttp": "hand-written aiohttp loop",
    "sail-sdk": "official Sail SDK 0.17.1",
    "openai-sdk": "OpenAI Python SDK 3.54",
}


def num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}"


def ratio(value: float | None, reference: float | None, invert: bool = False) -> str:
    """value / reference as "12x" (or reference / value for costs, where less is better)."""
    if not value or not reference:
        return "n/a"
    r = reference / value if invert else value / reference
    if r < 0.1:
        return f"{r:.2f}x"
    return f"{r:,.1f}x" if r < 10 else f"{r:,.0f}x"


def status(c: dict[str, Any]) -> str:
    if c["measured_runs"] == 0:
        return "failed: " + "; ".join(c["failures"])[:120]
    notes = []
    if c["timed_out"]:
        notes.append("timed out")
    if c.get("capped"):
        notes.append(f"slow: stopped starting samples at the time limit ({c['started_total']:,} samples over {c['measured_runs']} runs)")
    if c.get("fd_exhausted"):
        notes.append(f"ran out of file descriptors (limit {c['fd_limit']:,}): one socket per request in flight")
    if c["failures"]:
        notes.append(f"{len(c['failures'])} run(s) failed")
    return ", ".join(notes)


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _clients(scenario: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return scenario["clients"]


def _rss_added(c: dict[str, Any]) -> float | None:
    if c.get("peak_rss_during_mb") is None or c.get("rss_before_mb") is None:
        return None
    return c["peak_rss_during_mb"] - c["rss_before_mb"]


def throughput_section(report: dict[str, Any]) -> str:
    s = report["scenarios"].get("throughput")
    if not s:
        return ""
    p = s["parameters"]
    clients = _clients(s)
    ref = clients.get(OFFICIAL, {})
    rows = []
    cap = report.get("emulator_capacity") or {}
    if cap.get("samples_per_second"):
        rows.append(["emulator capacity (sail-loadgen, Rust, no Python)", num(cap["samples_per_second"]),
                     ratio(cap["samples_per_second"], ref.get("samples_per_second")), "-", "-",
                     num(cap.get("http_requests_per_sample"), 2), "-", "-", "-", cap.get("note", "")])
    elif cap:
        rows.append(["emulator capacity (sail-loadgen)", "n/a", "", "", "", "", "", "", "", cap.get("reason", "")])
    for name, c in clients.items():
        rows.append([
            LABELS[name], num(c["samples_per_second"]), ratio(c["samples_per_second"], ref.get("samples_per_second")),
            num(c["client_cpu_us_per_sample"]), ratio(c["client_cpu_us_per_sample"], ref.get("client_cpu_us_per_sample"), invert=True),
            num(c["http_requests_per_sample"], 2), num(c["peak_rss_mb"]), num(_rss_added(c)), f"{c['errors_total']:,}", status(c),
        ])
    intro = (f"{p['n']:,} samples per run, {p['concurrency']:,} in flight, {p['prompt_tokens']}-token prompts, "
             f"max_tokens={p['max_tokens']} (the emulator's model stops early on its end token: "
             f"{num(clients.get('sail-lite', {}).get('output_tokens_per_sample'), 1)} output tokens per sample on average), "
             f"emulator latency 0; up to {p['warmup']:,} warm-up samples (5 s at most) first. Peak RSS includes the ~600 MB that importing tinker-cookbook and torch costs every client. A client that cannot finish in "
             f"{p['max_seconds']:.0f} s starts no new samples after that; its rate is over what it finished.")
    return "\n\n".join([
        f"### 1. Throughput and client CPU\n\n{intro}",
        table(["client", "samples/s", "vs official SDK", "client CPU µs/sample", "less CPU than official SDK",
               "HTTP requests/sample", "peak RSS MB", "RSS added by the run MB", "errors", "notes"], rows),
    ])


def slow_server_section(report: dict[str, Any]) -> str:
    """Latency 0 against benches/slow_sail_server.py, next to the same clients against the emulator."""
    s = report["scenarios"].get("throughput-slow-server")
    if not s:
        return ""
    p = s["parameters"]
    fast = _clients(report["scenarios"].get("throughput", {"clients": {}}))
    clients = _clients(s)
    ref, fast_ref = clients.get(OFFICIAL, {}), fast.get(OFFICIAL, {})
    rows = []
    for name, c in clients.items():
        f = fast.get(name, {})
        rows.append([
            LABELS[name], num(c["samples_per_second"]), num(c["client_cpu_us_per_sample"]),
            ratio(c["client_cpu_us_per_sample"], ref.get("client_cpu_us_per_sample"), invert=True),
            num(f.get("client_cpu_us_per_sample")),
            ratio(f.get("client_cpu_us_per_sample"), fast_ref.get("client_cpu_us_per_sample"), invert=True),
            num(c["http_requests_per_sample"], 2), f"{c['errors_total']:,}", status(c),
        ])
    intro = (f"The latency-0 throughput run against a slow server: `benches/slow_sail_server.py`, Sail's create/poll "
             f"protocol in Python on aiohttp (one process, stdlib JSON), so the CPU ratios above are not an artefact "
             f"of a fast Rust emulator. {p['n']:,} samples per run, {p['concurrency']:,} in flight, "
             f"{p['prompt_tokens']}-token prompts, {p['max_tokens']} output tokens per sample; the emulator columns "
             "repeat table 1's figures from the same run.")
    return "\n\n".join([
        f"### 1b. Throughput against a slow Python server\n\n{intro}",
        table(["client", "samples/s", "client CPU µs/sample", "less CPU than official SDK",
               "emulator: client CPU µs/sample", "emulator: less CPU than official SDK", "HTTP requests/sample",
               "errors", "notes"], rows),
    ])


def scale_section(report: dict[str, Any]) -> str:
    s = report["scenarios"].get("scale")
    if not s:
        return ""
    p = s["parameters"]
    rows = []
    for name, c in _clients(s).items():
        rows.append([
            LABELS[name], f"{c['succeeded_total']:,} / {c['started_total']:,}", f"{c['errors_total']:,}",
            num(c["wall_seconds"], 1), num(c["peak_in_flight"]), num(c["peak_rss_during_mb"]),
            num(c["rss_per_in_flight_kb"], 2), num(c["peak_sockets"]), num(c["http_requests_per_sample"], 1),
            num(c["client_cpu_us_per_sample"]), status(c),
        ])
    intro = (f"{p['n']:,} samples started at once, emulator latency {p['latency_seconds']:g} s, at most "
             f"{p['max_seconds']:.0f} s per run. RSS per in-flight sample = (peak RSS - RSS before the run) / peak in flight.")
    return "\n\n".join([
        f"### 2. {s['title']}\n\n{intro}",
        table(["client", "succeeded / started (all runs)", "errors", "wall s", "peak in flight", "peak RSS MB",
               "RSS KB per in-flight sample", "peak open sockets", "HTTP requests/sample", "client CPU µs/sample", "notes"], rows),
    ])


def poll_section(report: dict[str, Any]) -> str:
    polls = {k: s for k, s in report["scenarios"].items() if s["kind"] == "poll"}
    if not polls:
        return ""
    names: list[str] = []
    for s in polls.values():
        names += [n for n in _clients(s) if n not in names]
    header = ["client"]
    for s in polls.values():
        latency = f"{s['parameters']['latency_seconds']:g} s"
        header += [f"{latency}: overhead p50 / p99 ms", f"{latency}: polls/sample"]
    rows = []
    for name in names:
        row = [LABELS[name]]
        for s in polls.values():
            c = _clients(s).get(name)
            if not c or c["measured_runs"] == 0:
                row += ["n/a", "n/a"]
                continue
            mark = " (timed out)" if c["timed_out"] else ""
            row += [f"{num(c['overhead_p50_ms'])} / {num(c['overhead_p99_ms'])}{mark}", num(c["polls_per_sample"], 1)]
        rows.append(row)
    first = next(iter(polls.values()))["parameters"]
    intro = (f"{first['n']} samples per run, started {first['spacing'] * 1e3:g} ms apart, every response taking exactly the "
             "stated time (no jitter). Overhead = the caller's end-to-end time minus that latency: how long after the "
             "emulator finished a response the awaiting caller had it (it includes the create round trip, well under "
             "1 ms here). Polls/sample from the emulator's counters.")
    return "\n\n".join(["### 3. Poll overhead\n\n" + intro, table(header, rows)])


def faults_section(report: dict[str, Any]) -> str:
    s = report["scenarios"].get("faults")
    if not s:
        return ""
    p = s["parameters"]
    clients = _clients(s)
    ref = clients.get(OFFICIAL, {})
    rows = []
    for name, c in clients.items():
        kinds = ", ".join(f"{k} {v:,}" for k, v in sorted(c["error_kinds"].items()))
        rows.append([
            LABELS[name], num(c["samples_per_second"]), ratio(c["samples_per_second"], ref.get("samples_per_second")),
            f"{c['succeeded_total']:,} / {c['started_total']:,}", f"{c['duplicates_total']:,}",
            num(c["http_requests_per_sample"], 2), kinds or "-",
        ])
    f = p["emulator"]["faults"]
    five = f.get("rate_500", 0) + f.get("rate_502", 0) + f.get("rate_503", 0)
    intro = (f"{p['n']:,} samples per run, {p['concurrency']:,} in flight, latency 0; on every create and poll the emulator "
             f"answers 429 (Retry-After 1 s) with p={f['rate_429']:g}, a 5xx with p={five:g}, or drops the connection "
             f"with p={f['rate_drop']:g}; half of the create faults strike after the response was created. "
             "Duplicates = samples the emulator started twice (idempotency-key duplicates, plus creates beyond one per sample).")
    return "\n\n".join([
        "### 4. Faults\n\n" + intro,
        table(["client", "samples/s", "vs official SDK", "succeeded / started (all runs)", "duplicates",
               "HTTP requests/sample", "errors by kind"], rows),
    ])


def cold_start_section(report: dict[str, Any]) -> str:
    cs = report.get("cold_start")
    if not cs:
        return ""
    rows = []
    for module, p in cs["packages"].items():
        deps = p["required_dependencies"]
        rows.append([
            f"`import {module}` ({p['distribution']} {p['version']})", num(p["import_ms"], 1), num(p["import_wall_ms"], 1),
            "n/a" if p["wheel_bytes"] is None else num(p["wheel_bytes"] / 1e6, 2), num(p["installed_bytes"] / 1e6, 2),
            f"{len(deps)}" + (f" ({', '.join(deps)})" if deps else ""),
        ])
    intro = (f"Medians of {cold_start.IMPORT_RUNS} fresh interpreters in the bench environment (which has tinker-cookbook and torch "
             f"installed): import ms = the `import X` statement alone, timed inside the interpreter; wall ms = "
             f"`python -c \"import X\"` end to end (an empty `python -c pass` takes {cs['interpreter_startup_ms']:.0f} ms).")
    return "\n\n".join([
        "### 5. Cold start and footprint\n\n" + intro,
        table(["package", "import ms", "wall ms", "wheel MB", "installed MB", "required dependencies"], rows),
    ])


def targets_section(report: dict[str, Any]) -> str:
    rows = [[t.name, t.measured, "met" if t.met else ("**missed**" if t.met is False else "n/a")] for t in targets.evaluate(report)]
    return "### Targets\n\n" + table(["target", "measured", ""], rows)


def header(report: dict[str, Any]) -> str:
    m = report["machine"]
    load = ", ".join(f"{x:.1f}" for x in m["load_average_at_start"])
    if m.get("load_average_at_end"):
        load += " (at the end: " + ", ".join(f"{x:.1f}" for x in m["load_average_at_end"]) + ")"
    reps = sorted({s["parameters"]["reps"] for s in report["scenarios"].values()})
    return (f"Measured {report['date']} with `{report['command']}` (sail-lite {m['sail_lite_commit']}), "
            f"{report['total_seconds'] / 60:.0f} minutes: {m['cpu']}, {m['nproc']} cores, {m['memory_gib']} GiB RAM, "
            f"Linux {m['kernel']}, Python {m['python']}; load average at start {load}. "
            f"Figures are medians of {'/'.join(map(str, reps))} runs, each client and the emulator in their own "
            "processes on this one machine; ratios are to the official Sail SDK in the same run.")


def markdown(report: dict[str, Any]) -> str:
    parts = [header(report), targets_section(report), throughput_section(report),
             slow_server_section(report), scale_section(report),
             poll_section(report), faults_section(report), cold_start_section(report)]
    return "\n\n".join(p for p in parts if p) + "\n"


def splice_into_benchmarks_md(text: str) -> None:
    doc = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    if BEGIN not in doc or END not in doc:
        doc += f"\n{BEGIN}\n{END}\n"
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    BENCHMARKS_MD.write_text(pattern.sub(lambda _: f"{BEGIN}\n{text}\n{END}", doc))


def write_all(report: dict[str, Any], out: Path, update_benchmarks_md: bool) -> None:
    text = markdown(report)
    (out / "tables.md").write_text(text)
    print(text)
    if update_benchmarks_md:
        splice_into_benchmarks_md(text)
    try:
        import chart
    except ImportError as exc:  # matplotlib lives in the bench environment only
        print(f"(no chart: {exc})")
        return
    chart.draw(report, out / "benchmarks.png")
