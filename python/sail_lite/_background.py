"""Futures that look like tinker's ``APIFuture``: awaitable, and with a blocking ``.result()``.

tinker's clients return futures that work both ways, and the cookbook uses both (``await
client.sample(...)`` in rollouts, ``training_client.create_sampling_client(...).result()`` inside
async code). :func:`submit` runs a coroutine where that is safe:

- inside a running event loop, as a task on that loop (no thread hop on the hot path); a blocking
  ``.result()`` from that loop's own thread would deadlock, so it raises instead;
- anywhere else, on one process-wide background loop thread, so ``.result()`` can block.

Blocking setup work that may be called from the loop thread with ``.result()`` (exporting a
checkpoint) uses :func:`submit_in_background`, which always runs on the background thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from collections.abc import Coroutine, Generator
from typing import Any, Generic, TypeVar

from sail_lite.errors import SailEventLoopError

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_loop_pid = 0


def _background_loop() -> asyncio.AbstractEventLoop:
    """The process's background event loop, started on first use (and again after a fork)."""
    global _loop, _loop_pid
    with _lock:
        if _loop is None or _loop_pid != os.getpid():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="sail-lite-futures", daemon=True).start()
            _loop, _loop_pid = loop, os.getpid()
        return _loop


class SailFuture(Generic[T]):
    """The result of a sail-lite call made through a tinker-shaped interface.

    ``await future`` or ``future.result(timeout)``, as with tinker's ``APIFuture``;
    ``future.future()`` is the ``concurrent.futures.Future`` behind it.
    """

    __slots__ = ("_task", "_loop", "_cf")

    def __init__(self, coro: Coroutine[Any, Any, T], *, background: bool = False) -> None:
        running = None if background else _running_loop()
        self._cf: concurrent.futures.Future[T] | None = None
        self._task: asyncio.Task[T] | None = None
        if running is not None:
            self._loop = running
            self._task = running.create_task(coro)
        else:
            self._loop = _background_loop()
            self._cf = asyncio.run_coroutine_threadsafe(coro, self._loop)

    def __await__(self) -> Generator[Any, None, T]:
        return self.result_async().__await__()

    async def result_async(self, timeout: float | None = None) -> T:
        if self._task is not None and asyncio.get_running_loop() is self._loop:
            return await asyncio.wait_for(asyncio.shield(self._task), timeout)
        return await asyncio.wait_for(asyncio.wrap_future(self.future()), timeout)

    def result(self, timeout: float | None = None) -> T:
        if self._task is not None and _running_loop() is self._loop and not self._task.done():
            raise SailEventLoopError("result() would block the event loop this call runs on: use `await` on it instead")
        if self._task is not None and self._task.done():
            return self._task.result()
        return self.future().result(timeout)

    def future(self) -> concurrent.futures.Future[T]:
        if self._cf is None:
            assert self._task is not None
            self._cf = concurrent.futures.Future()
            self._task.add_done_callback(_copy_outcome_to(self._cf))
        return self._cf

    async def coroutine(self) -> T:
        return await self

    def done(self) -> bool:
        return self._task.done() if self._task is not None else bool(self._cf and self._cf.done())


def _copy_outcome_to(cf: concurrent.futures.Future[Any]) -> Any:
    def copy(task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            cf.cancel()
        elif task.exception() is not None:
            cf.set_exception(task.exception())
        else:
            cf.set_result(task.result())

    return copy


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def submit(coro: Coroutine[Any, Any, T]) -> SailFuture[T]:
    """Run ``coro`` on the caller's running loop if there is one, else in the background."""
    return SailFuture(coro)


def submit_in_background(coro: Coroutine[Any, Any, T]) -> SailFuture[T]:
    """Run ``coro`` on the background loop, so a blocking ``.result()`` is safe from any thread."""
    return SailFuture(coro, background=True)
