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
from typing import Any

from sail_lite import _core
from sail_lite.errors import SailEventLoopError, from_engine

_request_ids = itertools.count(1)


class LoopBridge:
    """The completion hub of one event loop (holds no reference to the loop itself)."""

    __slots__ = ("hub", "futures", "pid", "__weakref__")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.hub = _core.CompletionHub()
        # Strong: a pending sample keeps its future (and so its task) alive, like any awaited I/O.
        self.futures: dict[int, asyncio.Future[Any]] = {}
        self.pid = os.getpid()
        try:
            loop.add_reader(self.hub.fd, self._on_wake)
        except NotImplementedError as exc:  # e.g. Windows' proactor loop
            self.hub.close()
            raise SailEventLoopError(
                "this event loop cannot watch file descriptors (loop.add_reader); "
                "use the default selector loop or uvloop"
            ) from exc

    def submit(
        self,
        loop: asyncio.AbstractEventLoop,
        client: Any,
        prompt: Any,
        max_tokens: int,
        stop_strings: list[str] | None,
        stop_token_ids: list[int] | None,
        *,
        prompt_cache_key: str | None = None,
    ) -> tuple[int, asyncio.Future[Any]]:
        request_id = next(_request_ids)
        future = loop.create_future()
        client.submit(
            self.hub, request_id, prompt, max_tokens, stop_strings, stop_token_ids, prompt_cache_key=prompt_cache_key
        )
        self.futures[request_id] = future
        return request_id, future

    def cancel(self, request_id: int) -> None:
        """The awaiting task gave up: stop the sample (and cancel it server-side)."""
        self.futures.pop(request_id, None)
        self.hub.cancel(request_id)

    def _on_wake(self) -> None:
        futures = self.futures
        for request_id, tokens, logprobs, stop_reason, response_id, error, retries, cached in self.hub.drain():
            future = futures.pop(request_id, None)
            if future is None or future.done():
                continue
            if error is None:
                # cached: usage.input_tokens_details.cached_tokens (prompt_cache_hit_tokens).
                future.set_result((tokens, logprobs, stop_reason, response_id, retries, cached))
            else:
                future.set_exception(from_engine(*error))


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
    _bridges[loop] = weakref.ref(bridge)
    weakref.finalize(bridge, bridge.hub.close)
    weakref.finalize(loop, bridge.hub.close)
    return bridge
