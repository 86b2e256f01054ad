"""Hand-over between the Rust engine and asyncio: one completion hub per event loop.

Each ``submit`` registers a plain ``loop.create_future()`` under a request id and starts a
Rust task. Finished samples are queued in Rust; the first one of a burst writes a byte to a
pipe watched with ``loop.add_reader``, and ``_on_wake`` resolves every finished future in one
pass on the loop thread. The Rust side never touches Python objects, so interpreter shutdown
can never be entered from an engine thread.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import weakref

from sail_lite import _core, _exit, _logging
from sail_lite._redact import Redactor
from sail_lite.errors import SailEventLoopError, from_engine

_request_ids = itertools.count(1)


class LoopBridge:
    """The completion hub of one event loop (holds no reference to the loop itself)."""

    __slots__ = ("hub", "futures", "pid", "log_threshold", "_level_cache", "__weakref__")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.hub = _core.CompletionHub()
        # Strong: a pending sample keeps its future (and so its task) alive, like any awaited I/O.
        # Each future is kept with its completer's redactor, which masks that completer's
        # secrets in whatever the engine reports for it.
        self.futures: dict[int, tuple[asyncio.Future[_core.Completion], Redactor]] = {}
        self.pid = os.getpid()
        self.log_threshold = _logging.engine_threshold()
        self.hub.set_log_level(self.log_threshold)
        # The logger's isEnabledFor cache: `logging` empties it whenever a level changes
        # (setLevel anywhere, logging.disable), so "empty" is a change detector that costs one
        # attribute read per submit. Absent on another `logging`: wake-ups still follow.
        self._level_cache: dict[int, bool] = getattr(_logging.logger, "_cache", {1: True})
        try:
            loop.add_reader(self.hub.fd, self._on_wake)
        except NotImplementedError as exc:  # e.g. Windows' proactor loop
            self.hub.close()
            raise SailEventLoopError(
                "this event loop cannot watch file descriptors (loop.add_reader); use the default selector loop or uvloop"
            ) from exc

    def submit(
        self,
        loop: asyncio.AbstractEventLoop,
        client: _core.SamplerClient,
        redactor: Redactor,
        prompt: list[int],
        max_tokens: int,
        stop_strings: list[str] | None,
        stop_token_ids: list[int] | None,
        idempotency_key: str | None = None,
        prompt_cache_key: str | None = None,
        journal: _core.ResponseJournal | None = None,
    ) -> tuple[int, asyncio.Future[_core.Completion]]:
        request_id = next(_request_ids)
        if not self._level_cache:
            self._follow_log_level()
        future: asyncio.Future[_core.Completion] = loop.create_future()
        client.submit(self.hub, request_id, prompt, max_tokens, stop_strings, stop_token_ids, idempotency_key, prompt_cache_key, journal)
        self.futures[request_id] = (future, redactor)
        return request_id, future

    def _follow_log_level(self) -> bool:
        """Tell the engine the logger's current threshold if it changed (at every wake-up, and
        at a submit after a level changed). True if it changed."""
        threshold = _logging.engine_threshold()
        if threshold == self.log_threshold:
            return False
        self.log_threshold = threshold
        self.hub.set_log_level(threshold)
        return True

    def _redactor_for(self, request_id: int) -> Redactor | None:
        pending = self.futures.get(request_id)
        return None if pending is None else pending[1]

    def cancel(self, request_id: int) -> None:
        """The awaiting task gave up: stop the sample (and cancel it server-side)."""
        self.futures.pop(request_id, None)
        self.hub.cancel(request_id)

    def _on_wake(self) -> None:
        futures = self.futures
        hub = self.hub
        completions = hub.drain()
        # Log what the engine queued (before the completions it led to), and drop what was
        # queued before logging was turned off.
        changed = self._follow_log_level()
        if changed or self.log_threshold != _logging.OFF:
            events = hub.drain_events()
            if events:
                _logging.emit_events(events, self._redactor_for)
        for completion in completions:
            pending = futures.pop(completion.request_id, None)
            if pending is None:
                continue
            future, redactor = pending
            if future.done():
                continue
            error = completion.error
            if error is None:
                future.set_result(completion)
            else:
                future.set_exception(from_engine(error, redactor))


# Weak both ways: the loop owns its bridge (through its add_reader registration), so a closed,
# dropped loop and its bridge and pending futures form a cycle the garbage collector frees; a
# strong entry here would keep every such loop alive through the futures' references to it.
_bridges: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, weakref.ref[LoopBridge]] = weakref.WeakKeyDictionary()


def bridge_for(loop: asyncio.AbstractEventLoop) -> LoopBridge:
    """The bridge of ``loop``, created on first use. When the loop closes (dropping its reader)
    or is garbage collected, the hub closes and the samples still running for it are cancelled."""
    ref = _bridges.get(loop)
    bridge = ref() if ref is not None else None
    if bridge is not None and bridge.pid == os.getpid():
        return bridge
    if loop.is_closed():
        raise SailEventLoopError("the event loop is closed; await the completer inside a running loop")
    bridge = LoopBridge(loop)
    _exit.install()  # the first sample of this process: cancel what is in flight at exit
    _bridges[loop] = weakref.ref(bridge)
    weakref.finalize(bridge, bridge.hub.close)
    weakref.finalize(loop, bridge.hub.close)
    return bridge
