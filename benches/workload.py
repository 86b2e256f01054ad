"""The sampling workloads every client runs, identically: prompts, and the three drivers
(bounded concurrency for throughput, everything at once for scale, spaced starts for poll
latency). A client is just `async sample(model_input) -> TokensWithLogprobs`."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

Sample = Callable[[Any], Awaitable[Any]]

# Token ids spread like a real 160k vocabulary's (Kimi's), so request bodies have realistic size.
VOCAB = 160_000
DISTINCT_PROMPTS = 64


def make_prompts(length: int, count: int = DISTINCT_PROMPTS, seed: int = 0) -> list[Any]:
    """`count` distinct ModelInputs of `length` tokens, built before any measurement starts
    (in a real rollout the caller already holds them)."""
    import tinker

    rng = random.Random(seed)
    return [tinker.ModelInput.from_ints([rng.randrange(VOCAB) for _ in range(length)]) for _ in range(count)]


@dataclass
class RunLog:
    """What happened to each sample of one run."""

    started: int = 0
    succeeded: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    output_tokens: int = 0
    # (start, end) perf_counter times of successful samples (kept only when asked).
    spans: list[tuple[float, float]] = field(default_factory=list)
    wall_seconds: float = 0.0
    # Stopped starting samples at the time limit (every started one finished): a slow client.
    capped: bool = False
    # Samples still running at the time limit were cancelled: a stuck client.
    timed_out: bool = False

    @property
    def in_flight(self) -> int:
        return self.started - self.succeeded - sum(self.errors.values())

    def error(self, exc: BaseException) -> None:
        name = type(exc).__name__
        self.errors[name] = self.errors.get(name, 0) + 1


async def _one(sample: Sample, model_input: Any, log: RunLog, keep_spans: bool) -> None:
    t0 = time.perf_counter()
    log.started += 1
    try:
        result = await sample(model_input)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # counted, never fatal: errors are a measured outcome
        log.error(exc)
        return
    log.succeeded += 1
    log.output_tokens += len(result.tokens)
    if keep_spans:
        log.spans.append((t0, time.perf_counter()))


async def run_bounded(sample: Sample, prompts: list[Any], n: int, concurrency: int, max_seconds: float, log: RunLog) -> RunLog:
    """`n` samples, at most `concurrency` in flight, one asyncio task per sample (as a rollout
    loop makes them). No new sample starts after `max_seconds`; those in flight finish."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    t0 = time.perf_counter()
    deadline = t0 + max_seconds
    next_index = 0
    # asyncio keeps only weak references to tasks: whoever starts one must hold it.
    running: set[asyncio.Task] = set()

    def launch() -> None:
        nonlocal next_index
        task = loop.create_task(_one(sample, prompts[next_index % len(prompts)], log, False))
        task.add_done_callback(finished)
        running.add(task)
        next_index += 1

    def finished(task: asyncio.Task) -> None:
        running.discard(task)
        if next_index < n and time.perf_counter() < deadline:
            launch()
        elif not running and not done.done():
            done.set_result(None)

    for _ in range(min(concurrency, n)):
        launch()
    await done
    log.wall_seconds = time.perf_counter() - t0
    log.capped = next_index < n
    return log


async def run_all_at_once(sample: Sample, prompts: list[Any], n: int, max_seconds: float, log: RunLog,
                          spacing: float = 0.0, keep_spans: bool = False) -> RunLog:
    """Start `n` samples (all at once, or `spacing` seconds apart) and wait for all of them,
    at most `max_seconds`; whatever is still running then is cancelled and the run marked
    timed out."""
    t0 = time.perf_counter()
    tasks = []
    for i in range(n):
        tasks.append(asyncio.create_task(_one(sample, prompts[i % len(prompts)], log, keep_spans)))
        if spacing:
            await asyncio.sleep(spacing)
    remaining = max(0.0, t0 + max_seconds - time.perf_counter())
    _, pending = await asyncio.wait(tasks, timeout=remaining)
    log.wall_seconds = time.perf_counter() - t0
    if pending:
        log.timed_out = True
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=10)
    return log
