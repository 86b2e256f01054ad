"""Shared fixtures: an in-process emulator for the whole session (latency 0, no faults) and a
factory for tests that need their own configuration (faults, latency, retention, logs)."""

from __future__ import annotations

from typing import Any, Callable, Iterator

import pytest

from sail_lite.emulator import Emulator


@pytest.fixture(scope="session")
def emulator() -> Iterator[Emulator]:
    """One fast emulator for the session. Its counters are shared: compare deltas, or use
    ``fresh_emulator`` when a test needs exact counts or changes faults/latency."""
    with Emulator(latency=0, loras={"style-a": {"rank": 8, "seed": 1}}) as emu:
        yield emu


@pytest.fixture
def fresh_emulator() -> Iterator[Callable[..., Emulator]]:
    """``fresh_emulator(**kwargs)`` starts a private emulator (latency 0 unless given), closed
    when the test ends."""
    made: list[Emulator] = []

    def factory(**kwargs: Any) -> Emulator:
        kwargs.setdefault("latency", 0)
        emu = Emulator(**kwargs)
        made.append(emu)
        return emu

    yield factory
    for emu in made:
        emu.close()
