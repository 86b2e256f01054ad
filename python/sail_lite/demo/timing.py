"""A ``TokenCompleter`` wrapper that measures every sampling call: latency, tokens, stop reason."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import tinker
from tinker_cookbook.completers import StopCondition, TokenCompleter, TokensWithLogprobs

__all__ = ["CallLog", "TimedCompleter", "percentile"]


@dataclass
class CallLog:
    """What the wrapped completers measured, shared by all of them."""

    latencies: list[float] = field(default_factory=list)
    tokens: int = 0
    stopped_by_length: int = 0
    failures: int = 0

    @property
    def calls(self) -> int:
        return len(self.latencies)


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by the nearest-rank method; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(len(ordered) * q / 100))
    return ordered[rank - 1]


class TimedCompleter(TokenCompleter):
    """Forwards to ``inner`` and records each successful call's wall time and sampled tokens in
    ``log`` (failed calls are counted separately). ``on_call`` runs after every call."""

    def __init__(self, inner: TokenCompleter, log: CallLog, on_call: Callable[[], None] | None = None) -> None:
        self.inner = inner
        self.log = log
        self.on_call = on_call

    async def __call__(self, model_input: tinker.ModelInput, stop: StopCondition, *, max_tokens: int | None = None) -> TokensWithLogprobs:
        started = time.perf_counter()
        try:
            result = await self.inner(model_input, stop, max_tokens=max_tokens)
        except Exception:
            self.log.failures += 1
            raise
        self.log.latencies.append(time.perf_counter() - started)
        self.log.tokens += len(result.tokens)
        self.log.stopped_by_length += result.stop_reason == "length"
        if self.on_call is not None:
            self.on_call()
        return result
