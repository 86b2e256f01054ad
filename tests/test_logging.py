"""The ``sail_lite`` logger: the engine's events (retries, failed responses, server-side
cancels) are logged on the event loop's thread at openai-python's levels, only while the
logger would emit them, and never carry a secret. Servers here are ``ScriptedServer``s on
loopback (test doubles of a misbehaving Sail)."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest

import sail_lite
from reliability_helpers import Reply, ScriptedServer, completed_body, prompt_for, sail_completer, sail_script
from sail_lite import _bridge

API_KEY = "sk-sail-LOGSECRET-5d1e0c9b8a7f6e24"


def flaky_script(failures: int):
    """503 for the first ``failures`` creates (echoing the Authorization header), then Sail."""
    sail = sail_script(lambda rid, n: Reply.json(200, completed_body(rid, [5, 6], [-0.5, -0.75])))
    creates = 0

    def respond(request):
        nonlocal creates
        if request.method == "POST" and request.path == "/v1/responses":
            creates += 1
            if creates <= failures:
                auth = request.headers.get("authorization", "")
                return Reply.json(503, {"error": {"message": f"busy ({auth})", "code": "overloaded"}}, headers={"retry-after-ms": "10"})
        return sail(request)

    return respond


def sample(completer):
    return asyncio.run(completer(prompt_for(0)))


@pytest.mark.timeout(60)
def test_each_retry_is_logged_at_info_with_attempt_status_and_delay(caplog):
    caplog.set_level(logging.INFO, logger="sail_lite")
    threads: set[str] = set()
    handler = logging.Handler()
    handler.emit = lambda record: threads.add(record.threadName)  # type: ignore[method-assign]
    logging.getLogger("sail_lite").addHandler(handler)
    try:
        with ScriptedServer(flaky_script(2)) as server:
            result = sample(sail_completer(base_url=server.base_url, api_key=API_KEY, max_retries=3))
    finally:
        logging.getLogger("sail_lite").removeHandler(handler)
    assert result.tokens == [5, 6]
    retries = [r for r in caplog.records if getattr(r, "sail_event", None) == "retry"]
    assert [r.levelno for r in retries] == [logging.INFO, logging.INFO]
    assert [(r.sail_attempt, r.sail_max_attempts, r.sail_status) for r in retries] == [(1, 4, 503), (2, 4, 503)]
    first = retries[0].getMessage()
    assert "create failed with HTTP 503" in first and "attempt 1 of 4" in first and "retrying in" in first, first
    assert all(r.sail_delay is not None and r.sail_delay > 0 for r in retries)
    assert API_KEY not in caplog.text and "Bearer <redacted>" in first
    # Emitted on the event loop's thread (asyncio.run's), never on an engine thread.
    assert threads == {threading.main_thread().name}


@pytest.mark.timeout(60)
def test_failed_response_and_server_cancel_are_logged(caplog):
    caplog.set_level(logging.DEBUG, logger="sail_lite")
    failed = sail_script(
        lambda rid, n: Reply.json(200, {"id": rid, "status": "failed", "error": {"message": "model crashed", "code": "server_error"}})
    )
    with ScriptedServer(failed) as server:
        with pytest.raises(sail_lite.SailResponseFailedError):
            sample(sail_completer(base_url=server.base_url, api_key=API_KEY))
    events = {r.sail_event: r for r in caplog.records if hasattr(r, "sail_event")}
    assert events["response_failed"].levelno == logging.INFO
    assert "model crashed" in events["response_failed"].getMessage() and events["response_failed"].sail_response_id

    caplog.clear()
    pending = sail_script(lambda rid, n: Reply.json(200, {"id": rid, "status": "in_progress"}))
    with ScriptedServer(pending) as server:
        with pytest.raises(sail_lite.SailTimeoutError):
            sample(sail_completer(base_url=server.base_url, api_key=API_KEY, poll_timeout=0.3))
    cancels = [r for r in caplog.records if getattr(r, "sail_event", None) == "server_cancel"]
    assert cancels and cancels[0].levelno == logging.DEBUG and "cancel" in cancels[0].getMessage()


@pytest.mark.timeout(60)
def test_with_logging_off_the_engine_queues_no_events(caplog):
    caplog.set_level(logging.WARNING, logger="sail_lite")

    async def run_and_inspect(completer):
        result = await completer(prompt_for(0))
        bridge = _bridge.bridge_for(asyncio.get_running_loop())
        return result, bridge.log_threshold, bridge.hub.drain_events()

    with ScriptedServer(flaky_script(2)) as server:
        result, threshold, leftover = asyncio.run(run_and_inspect(sail_completer(base_url=server.base_url, api_key=API_KEY, max_retries=3)))
    assert result.tokens == [5, 6]
    assert threshold > logging.INFO and leftover == []
    assert not [r for r in caplog.records if hasattr(r, "sail_event")]


@pytest.mark.timeout(60)
def test_turning_logging_on_reaches_a_running_loop(caplog):
    """The level is re-read at every submit and wake-up, so a loop created while logging was off
    starts logging once it is on."""
    caplog.set_level(logging.INFO, logger="sail_lite")  # the capture handler takes INFO (restored after)
    logging.getLogger("sail_lite").setLevel(logging.WARNING)  # ... but the logger starts off

    async def two_samples(server):
        await sail_completer(base_url=server.base_url, api_key=API_KEY)(prompt_for(0))  # healthy: logging off
        logging.getLogger("sail_lite").setLevel(logging.INFO)
        return await sail_completer(base_url=server.base_url, api_key=API_KEY, max_retries=3)(prompt_for(1))

    state = {"creates": 0}
    sail = sail_script(lambda rid, n: Reply.json(200, completed_body(rid, [5, 6], [-0.5, -0.75])))

    def respond(request):
        if request.method == "POST" and request.path == "/v1/responses":
            state["creates"] += 1
            if state["creates"] == 2:
                return Reply.json(503, {"error": {"message": "busy"}}, headers={"retry-after-ms": "200"})
        return sail(request)

    with ScriptedServer(respond) as server:
        asyncio.run(two_samples(server))
    # The threshold is re-read at every submit, so the second sample already logs its retry.
    assert [r.sail_attempt for r in caplog.records if getattr(r, "sail_event", None) == "retry"] == [1]
