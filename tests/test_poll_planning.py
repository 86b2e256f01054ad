"""Distribution-aware polling against the emulator with a compressed, lognormal latency profile:
the engine learns when responses finish and, once warm, polls each sample only a few times."""

from __future__ import annotations

import asyncio

import pytest
import tinker

import sail_lite
from sail_lite.emulator import Emulator
from sail_lite.errors import SailArgumentError

MODEL = "sail-lite/byte-ngram"
PROMPT = tinker.ModelInput.from_ints(list(b"The weather today is"))
# Sail's priority shape (lognormal around the window's turn time), compressed to ~1 s: long enough
# that a loaded machine's scheduling jitter (tens of ms) stays small beside a 5% overshoot target.
LATENCY = {"distribution": "lognormal", "sigma": 0.1, "windows": {"priority": 1.0}, "in_progress_fraction": 0.0}


def _completer(emu: Emulator, **kw) -> sail_lite.SailTokenCompleter:
    return sail_lite.SailTokenCompleter(model=MODEL, max_tokens=8, base_url=emu.base_url, api_key=emu.api_key,
                                        completion_window="priority", **kw)


async def _round(completer: sail_lite.SailTokenCompleter, n: int) -> list:
    return await asyncio.gather(*(completer(PROMPT) for _ in range(n)))


def _requests(before: dict[str, int], after: dict[str, int]) -> int:
    return (after["creates"] - before["creates"]) + (after["polls"] - before["polls"])


def test_requests_per_sample_are_few_once_warm():
    with Emulator(latency=LATENCY, seed=11) as emu:
        completer = _completer(emu)
        # Cold: nothing learned for this server yet; every sample still completes.
        cold = asyncio.run(_round(completer, 24))
        assert len(cold) == 24 and all(r.tokens for r in cold)
        # Rounds to learn (the cold cohort was polled late, so its completions only bound the
        # service time from above; the next ones pin it down), then measure one.
        asyncio.run(_round(completer, 24))
        asyncio.run(_round(completer, 48))
        emu.reset_stats()
        before = sail_lite.engine_metrics()
        warm = asyncio.run(_round(completer, 48))
        after = sail_lite.engine_metrics()
        assert all(r.tokens for r in warm)
        per_sample = _requests(before, after) / 48
        # ~6 on a quiet machine (BENCHMARKS.md); a loaded 2-core VM measured 12. The bound is
        # generous on purpose: the fixed geometric schedule it replaced made ~50.
        assert per_sample <= 20, f"{per_sample:.1f} requests per sample once warm"
        stats = emu.stats()
        # The server saw what the engine counted: one create per sample and the same polls, each
        # completion seen once.
        assert stats["creates"] == 48
        assert stats["polls"] == after["polls"] - before["polls"]
        assert stats["poll_lateness"]["count"] == 48


def test_the_emulator_reports_how_late_each_completion_was_seen():
    with Emulator(latency=LATENCY, seed=12) as emu:
        asyncio.run(_round(_completer(emu), 8))
        lateness = emu.stats()["poll_lateness"]
        assert lateness["count"] == 8
        assert 0.2 < lateness["mean_service_seconds"] < 2.0
        assert 0 < lateness["p50"] <= lateness["p99"] <= lateness["max"]


@pytest.mark.parametrize("bad", [0, -0.1, float("nan"), float("inf"), "0.05", True, 11])
def test_poll_overhead_is_checked(bad):
    # Checked at construction, before any request: no server needed.
    with pytest.raises(SailArgumentError) as err:
        sail_lite.SailTokenCompleter(model=MODEL, max_tokens=8, base_url="http://127.0.0.1:9", api_key="k", poll_overhead=bad)
    assert err.value.argument == "poll_overhead"


def test_a_tighter_overhead_still_completes():
    with Emulator(latency=LATENCY, seed=13) as emu:
        out = asyncio.run(_round(_completer(emu, poll_overhead=0.01), 8))
        assert all(r.tokens for r in out)
