"""Runs the demo: groups of toy-arithmetic rollouts through tinker-cookbook's ``do_group_rollout``
with ``SailTokenCompleter`` as the policy, against a local emulator, half of the groups through a
LoRA served from a Tinker-style signed archive URL.

Groups come in pairs that share a question: group ``2k`` samples the base model, group ``2k+1``
the LoRA, so the summary compares the two on the same problems.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import sail_lite
from sail_lite.demo.lora_archive import adapter_config, lora_archive
from sail_lite.demo.timing import CallLog, TimedCompleter, percentile
from sail_lite.demo.toy_env import ArithmeticGroupBuilder, Problem, decode_bytes, make_problems
from sail_lite.emulator import Emulator

__all__ = ["DemoConfig", "GroupResult", "DemoResult", "Progress", "demo_emulator", "run_demo"]

DEFAULT_MODEL = "moonshotai/Kimi-K2.6"
LORA_NAME = "sail-lite-demo-lora"
PROGRESS_TICK_SECONDS = 0.2


@dataclass(frozen=True)
class DemoConfig:
    groups: int = 8
    group_size: int = 8
    window: str = "priority"
    concurrency: int = 4  # groups sampled at once
    lora: bool = True  # every second group samples through the LoRA
    model: str = DEFAULT_MODEL
    max_tokens: int = 8  # per turn; answers are a few bytes
    max_turns: int = 3
    temperature: float = 1.0
    latency_scale: float = 0.5  # on the emulator's per-window latencies (priority: 1 s)
    fault_rate: float = 0.02  # injected 429s and 503s per request, to exercise retries
    seed: int = 0

    def policy_of(self, group: int) -> str:
        return "lora" if self.lora and group % 2 == 1 else "base"

    def problems(self) -> list[Problem]:
        """One problem per group; paired groups share theirs when the LoRA is on."""
        distinct = make_problems((self.groups + 1) // 2 if self.lora else self.groups, self.seed)
        return [distinct[i // 2 if self.lora else i] for i in range(self.groups)]


@dataclass(frozen=True)
class GroupResult:
    index: int
    policy: str  # "base" or "lora"
    problem: Problem
    rewards: list[float]  # total reward per rollout
    answers: list[str]  # each rollout's last answer
    turns: list[int]

    @property
    def mean_reward(self) -> float:
        return sum(self.rewards) / len(self.rewards)

    @property
    def solved(self) -> int:
        return sum(1 for r in self.rewards if r >= 1.0)

    @property
    def advantages(self) -> list[float]:
        """GRPO: each rollout's reward minus its group's mean."""
        mean = self.mean_reward
        return [r - mean for r in self.rewards]


@dataclass(frozen=True)
class Progress:
    rollouts_done: int
    rollouts_total: int
    samples: int
    tokens: int
    elapsed: float


@dataclass
class DemoResult:
    config: DemoConfig
    groups: list[GroupResult]
    calls: CallLog
    wall_seconds: float
    retries: int
    http_requests: int
    emulator_stats: dict[str, Any] = field(default_factory=dict)

    @property
    def rollouts(self) -> int:
        return sum(len(g.rewards) for g in self.groups)

    @property
    def samples(self) -> int:
        return self.calls.calls

    @property
    def tokens(self) -> int:
        return self.calls.tokens

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.wall_seconds if self.wall_seconds > 0 else 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def latency(self, q: float) -> float:
        return percentile(self.calls.latencies, q)


def demo_emulator(config: DemoConfig, **overrides: Any) -> Emulator:
    """An emulator with the demo's latency scale and fault rate (half 429s, half 503s)."""
    half = config.fault_rate / 2
    options: dict[str, Any] = {
        "latency": config.latency_scale,
        "faults": {"rate_429": half, "rate_503": half, "retry_after_seconds": 0.2},
        "seed": config.seed,
    }
    options.update(overrides)
    return Emulator(**options)


class _ProgressReporter:
    """Counts finished rollouts and forwards snapshots to ``callback``."""

    def __init__(self, total: int, calls: CallLog, callback: Callable[[Progress], None] | None) -> None:
        self.total = total
        self.calls = calls
        self.callback = callback
        self.done = 0
        self.started = time.perf_counter()

    def episode_done(self) -> None:
        self.done += 1
        self.report()

    def report(self) -> None:
        if self.callback is not None:
            elapsed = time.perf_counter() - self.started
            self.callback(Progress(self.done, self.total, self.calls.calls, self.calls.tokens, elapsed))

    @contextlib.contextmanager
    def ticking(self) -> Iterator[None]:
        """Report periodically as well, so a live display's clock keeps running."""

        async def tick() -> None:
            while True:
                await asyncio.sleep(PROGRESS_TICK_SECONDS)
                self.report()

        task = asyncio.get_running_loop().create_task(tick()) if self.callback is not None else None
        try:
            yield
        finally:
            if task is not None:
                task.cancel()


def _policies(config: DemoConfig, emulator: Emulator) -> dict[str, Any]:
    common: dict[str, Any] = {
        "model": config.model,
        "max_tokens": config.max_tokens,
        "temperature": config.temperature,
        "completion_window": config.window,
        "base_url": emulator.base_url,
        "api_key": emulator.api_key,
    }
    policies = {"base": sail_lite.SailTokenCompleter(**common)}
    if config.lora:
        # Served like a Tinker checkpoint: a signed archive URL plus its PEFT adapter config.
        signed_url = emulator.add_tinker_archive(LORA_NAME, lora_archive(config.seed))
        policies["lora"] = sail_lite.SailTokenCompleter(
            **common,
            tinker_lora_signed_url=signed_url,
            adapter_config=adapter_config(base_model=config.model),
            tinker_lora_name=LORA_NAME,
        )
    return policies


def _group_result(index: int, policy: str, problem: Problem, group: Any) -> GroupResult:
    answers = [decode_bytes(t.transitions[-1].ac.tokens).strip() if t.transitions else "" for t in group.trajectories_G]
    return GroupResult(
        index=index,
        policy=policy,
        problem=problem,
        rewards=[float(r) for r in group.get_total_rewards()],
        answers=answers,
        turns=[len(t.transitions) for t in group.trajectories_G],
    )


async def run_demo(config: DemoConfig, emulator: Emulator, *, on_progress: Callable[[Progress], None] | None = None) -> DemoResult:
    """Sample ``config.groups`` groups of ``config.group_size`` rollouts from ``emulator``."""
    from tinker_cookbook.rl.rollouts import do_group_rollout

    calls = CallLog()
    reporter = _ProgressReporter(config.groups * config.group_size, calls, on_progress)
    policies = {name: TimedCompleter(completer, calls, on_call=reporter.report) for name, completer in _policies(config, emulator).items()}
    limit = asyncio.Semaphore(config.concurrency)

    async def run_group(index: int, problem: Problem) -> GroupResult:
        policy = config.policy_of(index)
        builder = ArithmeticGroupBuilder(problem, config.group_size, max_turns=config.max_turns, on_episode_done=reporter.episode_done)
        async with limit:
            group = await do_group_rollout(builder, policies[policy])
        return _group_result(index, policy, problem, group)

    before = sail_lite.engine_metrics()
    started = time.perf_counter()
    with reporter.ticking():
        groups = await asyncio.gather(*(run_group(i, p) for i, p in enumerate(config.problems())))
    wall = time.perf_counter() - started
    reporter.report()
    after = sail_lite.engine_metrics()
    return DemoResult(
        config=config,
        groups=list(groups),
        calls=calls,
        wall_seconds=wall,
        retries=after["retries"] - before["retries"],
        http_requests=after["http_requests"] - before["http_requests"],
        emulator_stats=emulator.stats(),
    )
