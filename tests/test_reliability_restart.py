"""The server restarts mid-run (connections reset, responses in flight forgotten): every
sample ends, as a correct answer or a typed error, and sampling goes on afterwards."""

from __future__ import annotations

import asyncio
import collections
import time

import pytest

import sail_lite
from reliability_helpers import SEED_METADATA, as_tuple, prompt_for, record_outcome, reference_samples, sail_completer
from sail_lite.emulator import Emulator

# What a sample caught by the restart may end as: its response died with the old server
# (404 on the next poll), or, were the server down longer than the retry budget, a
# connection error after every attempt.
RESTART_ERRORS = (sail_lite.SailResponseExpiredError, sail_lite.SailConnectionError)


@pytest.mark.timeout(180)
def test_samples_survive_a_server_restart():
    samples = 600
    with Emulator(latency=0) as clean:
        reference = sail_completer(clean, metadata=SEED_METADATA)
        expected = [as_tuple(s) for s in asyncio.run(reference_samples(reference, (prompt_for(i) for i in range(2 * samples))))]

    first = Emulator(latency={"scale": 0.5})
    port = first.port
    completer = sail_completer(first, metadata=SEED_METADATA)
    servers = {"second": None}
    down = 100  # samples started while no server listens: their creates are refused, then retried

    async def restart_midway():
        await asyncio.sleep(0.3)
        # Off the loop thread: closing joins the server's threads.
        await asyncio.to_thread(first.close)
        during = asyncio.gather(*(completer(prompt_for(i)) for i in range(samples, samples + down)))
        await asyncio.sleep(0.3)
        servers["second"] = await asyncio.to_thread(Emulator, port=port, latency={"scale": 0.5})
        return await during

    async def run():
        caught = asyncio.gather(*(completer(prompt_for(i)) for i in range(samples)), return_exceptions=True)
        _, during = await asyncio.gather(caught, restart_midway())
        after = await asyncio.gather(*(completer(prompt_for(i)) for i in range(samples + down, 2 * samples)))
        return caught.result(), during + after

    started = time.monotonic()
    try:
        caught, after = asyncio.run(run())
        elapsed = time.monotonic() - started
        second = servers["second"]
        assert second is not None
        stats = second.stats()
    finally:
        first.close()
        if servers["second"] is not None:
            servers["second"].close()

    outcomes = collections.Counter()
    for i, result in enumerate(caught):
        if isinstance(result, BaseException):
            assert isinstance(result, RESTART_ERRORS), repr(result)
            if isinstance(result, sail_lite.SailConnectionError):
                assert result.attempts == 9
            outcomes[type(result).__name__] += 1
        else:
            assert as_tuple(result) == expected[i]
            outcomes["ok"] += 1
    assert outcomes["SailResponseExpiredError"] > 0, "no sample was caught by the restart: the test proved nothing"
    # No attempt sat out its 60 s timeout on a connection the restart left dangling.
    assert elapsed < 45, f"the restart run took {elapsed:.0f}s"
    # Samples started while the server was down, and after it came back, all succeed, correctly.
    assert [as_tuple(r) for r in after] == expected[samples:]
    assert stats["duplicate_samples"] == 0
    record_outcome(
        "server restart mid-run",
        samples=2 * samples,
        seconds=round(elapsed, 1),
        caught_ok=outcomes["ok"],
        caught_expired=outcomes["SailResponseExpiredError"],
        caught_connection_error=outcomes["SailConnectionError"],
        started_while_down_ok=down,
        after_restart_ok=samples - down,
        lost=0,
        duplicated=stats["duplicate_samples"],
    )
