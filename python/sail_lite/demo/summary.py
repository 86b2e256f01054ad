"""The demo's closing summary: throughput and latency measured during the run, then one row per
group with its rewards."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sail_lite.demo.runner import DemoResult

__all__ = ["format_table", "format_summary"]

MAX_ANSWERS_SHOWN = 4


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool]) -> str:
    """A plain-text table; ``right[i]`` right-aligns column ``i`` (numbers)."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def fmt(cells: Sequence[str]) -> str:
        padded = [c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right, strict=True)]
        return "  " + "  ".join(padded).rstrip()

    rule = ["-" * w for w in widths]
    return "\n".join([fmt(headers), fmt(rule), *(fmt(r) for r in rows)])


def _metrics_rows(result: DemoResult) -> list[list[str]]:
    lora_downloads = result.emulator_stats.get("lora_downloads")
    rows = [
        ["rollouts", f"{result.rollouts}", f"{len(result.groups)} groups x {result.config.group_size}"],
        ["samples", f"{result.samples}", "sampling calls (1-3 turns per rollout)"],
        ["tokens", f"{result.tokens}", "sampled tokens"],
        ["wall time", f"{result.wall_seconds:.2f} s", "all groups, first create to last result"],
        ["samples/s", f"{result.samples_per_second:.1f}", ""],
        ["tokens/s", f"{result.tokens_per_second:.1f}", ""],
        ["latency p50", f"{result.latency(50):.3f} s", "per sampling call"],
        ["latency p99", f"{result.latency(99):.3f} s", ""],
        ["retries", f"{result.retries}", f"of {result.http_requests} HTTP requests (injected 429/503s)"],
    ]
    if lora_downloads is not None and result.config.lora:
        rows.append(["LoRA downloads", f"{lora_downloads}", "signed archive fetched by the emulator"])
    return rows


def _group_rows(result: DemoResult) -> list[list[str]]:
    rows = []
    for g in result.groups:
        shown = ", ".join(repr(a) for a in g.answers[:MAX_ANSWERS_SHOWN])
        more = f", ... ({len(g.answers)})" if len(g.answers) > MAX_ANSWERS_SHOWN else ""
        rows.append(
            [
                str(g.index),
                g.policy,
                f"{g.problem.a} + {g.problem.b} = {g.problem.answer}",
                f"{g.mean_reward:.2f}",
                f"{g.solved}/{len(g.rewards)}",
                f"{sum(g.turns) / len(g.turns):.1f}",
                shown + more,
            ]
        )
    return rows


def _policy_means(result: DemoResult) -> str:
    parts = []
    for policy in ("base", "lora"):
        rewards = [r for g in result.groups if g.policy == policy for r in g.rewards]
        if rewards:
            parts.append(f"{policy} {sum(rewards) / len(rewards):.2f} over {len(rewards)} rollouts")
    return "mean reward: " + "; ".join(parts)


def format_summary(result: DemoResult) -> str:
    c = result.config
    head = f"sail-lite demo: {c.model}, window {c.window!r}, emulator latency x{c.latency_scale:g}, {c.fault_rate:.0%} injected faults"
    metrics = format_table(["measured", "value", ""], _metrics_rows(result), [False, True, False])
    groups = format_table(
        ["group", "policy", "problem", "reward", "solved", "turns", "last answers"],
        _group_rows(result),
        [True, False, False, True, True, True, False],
    )
    return "\n".join([head, "", metrics, "", groups, "", "  " + _policy_means(result)])
