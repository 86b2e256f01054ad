"""``timeout`` (one HTTP attempt) and ``poll_timeout`` (the whole sample) hold even when the
server stops answering mid-request: a socket that accepts and never replies, during the
create or during a poll."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import sail_lite
from reliability_helpers import Reply, ScriptedServer, SilentServer, completed_body, prompt_for, record_outcome, sail_completer, sail_script

# A deadline that did not hold would leave these samples hanging on a silent server until an
# attempt's default 60 s timeout (or pytest's). The upper bounds are that coarse on purpose:
# GENEROUS times the expected time, so a loaded 2-core machine cannot fail them.
GENEROUS = 8


def timed_failure(completer, prompt=None):
    started = time.monotonic()
    with pytest.raises(sail_lite.SailError) as info:
        asyncio.run(completer(prompt or prompt_for(0)))
    return info.value, time.monotonic() - started


@pytest.mark.timeout(60)
def test_attempt_timeout_bounds_each_attempt_against_a_silent_server():
    with SilentServer() as server:
        completer = sail_completer(base_url=server.base_url, api_key="sk-test", timeout=0.3, max_retries=2)
        err, elapsed = timed_failure(completer)
        accepted = server.accepted
    assert isinstance(err, sail_lite.SailTimeoutError) and isinstance(err, TimeoutError)
    assert err.attempts == 3
    # Three 0.3 s attempts plus two backoffs of at most 0.25 s and 0.5 s.
    assert 0.9 <= elapsed <= GENEROUS * (0.9 + 0.75), elapsed
    assert accepted >= 1
    record_outcome("silent server, timeout=0.3 s, max_retries=2", samples=1, seconds=round(elapsed, 2), attempts=err.attempts, lost=0)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("timeout", [None, 0.2], ids=["default-timeout", "short-timeout"])
def test_poll_timeout_bounds_the_sample_against_a_silent_server(timeout):
    with SilentServer() as server:
        completer = sail_completer(base_url=server.base_url, api_key="sk-test", timeout=timeout, poll_timeout=1.0)
        err, elapsed = timed_failure(completer)
    assert isinstance(err, sail_lite.SailTimeoutError)
    # It may end a little early: a retry that could not start before the deadline is not waited for.
    assert 0.2 <= elapsed <= GENEROUS * 1.0, elapsed
    record_outcome(f"silent server, poll_timeout=1 s, timeout={timeout}", samples=1, seconds=round(elapsed, 2), lost=0)


@pytest.mark.timeout(60)
def test_many_samples_against_a_silent_server_all_end_by_the_deadline():
    with SilentServer() as server:
        completer = sail_completer(base_url=server.base_url, api_key="sk-test", poll_timeout=1.0, max_connections=32)

        async def run():
            return await asyncio.gather(*(completer(prompt_for(i)) for i in range(200)), return_exceptions=True)

        started = time.monotonic()
        results = asyncio.run(run())
        elapsed = time.monotonic() - started
    # Samples queued behind max_connections still end at their own deadline.
    assert all(isinstance(r, sail_lite.SailTimeoutError) for r in results), {type(r).__name__ for r in results}
    assert elapsed <= GENEROUS * 1.0, elapsed
    record_outcome("silent server, 200 samples, poll_timeout=1 s", samples=200, seconds=round(elapsed, 2), lost=0)


class PollHangs:
    """Creates are answered; polls are held open, never answered, until ``release``."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.cancels: list[str] = []
        sail = sail_script(lambda rid, n: Reply.json(200, completed_body(rid, [1], [-0.1])))

        def respond(request):
            if request.method == "GET":
                self.release.wait(30)
                return Reply.json(503, {"error": {"message": "gone"}})
            if request.path.endswith("/cancel"):
                self.cancels.append(request.path)
            return sail(request)

        self.respond = respond


@pytest.mark.timeout(60)
def test_poll_timeout_holds_when_a_poll_never_answers_and_cancels_server_side():
    hangs = PollHangs()
    with ScriptedServer(hangs.respond) as server:
        try:
            completer = sail_completer(base_url=server.base_url, api_key="sk-test", poll_timeout=1.0)
            err, elapsed = timed_failure(completer)
            # The abandoned response is cancelled server-side (best effort, after the error).
            deadline = time.monotonic() + 5
            while not hangs.cancels and time.monotonic() < deadline:
                time.sleep(0.02)
        finally:
            hangs.release.set()
    assert isinstance(err, sail_lite.SailTimeoutError)
    assert err.response_id == "resp_1"
    assert 1.0 <= elapsed <= GENEROUS * 1.0, elapsed
    assert hangs.cancels == ["/v1/responses/resp_1/cancel"]


@pytest.mark.timeout(60)
def test_attempt_timeout_retries_a_hung_poll_then_succeeds():
    """The first poll hangs past ``timeout``; the retried poll is answered."""
    polls = []
    retried, first_answered = threading.Event(), threading.Event()
    seen = {}

    def poll(rid, number):
        polls.append(number)
        if number == 1:
            # Hang until the retry arrives (30 s only if the client never retries).
            retried.wait(30)
            first_answered.set()
        else:
            seen["first_still_hanging"] = not first_answered.is_set()
            retried.set()
        return Reply.json(200, completed_body(rid, [7, 8], [-0.5, -0.5]))

    # The poll-after hint puts the first poll right after the create, whatever the plan.
    with ScriptedServer(sail_script(poll, poll_after_ms=5)) as server:
        completer = sail_completer(base_url=server.base_url, api_key="sk-test", timeout=0.3)
        sample = asyncio.run(completer(prompt_for(0)))
    assert sample.tokens == [7, 8]
    assert polls[:2] == [1, 2]
    assert seen["first_still_hanging"], "the hung poll was waited out instead of timed out"
