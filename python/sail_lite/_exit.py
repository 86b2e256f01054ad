"""Exit without orphans: samples nobody will wait for are cancelled on the server.

When a process that sampled exits normally, by an uncaught exception (Ctrl-C's
KeyboardInterrupt included) or by SIGTERM, its unscoped in-flight samples are cancelled on
the server, best effort, waiting at most ``SAIL_LITE_EXIT_CANCEL_SECONDS`` (default 2 s) for
the cancels to be sent: never a hang at exit. Scoped samples (``sampling_scope``) are left
running for a restarted process to re-attach to. SIGKILL and ``os._exit`` skip all of this.

How, without breaking user code: an ``atexit`` hook (normal exit, exceptions; asyncio's own
cancellation of pending tasks on Ctrl-C already asks for the cancels, the hook waits for them
to be sent), and a SIGTERM handler installed only when SIGTERM still has its default action
(a handler the user set is never replaced) and only from the main thread. That handler
cancels, restores the default action and re-sends SIGTERM to the process, so the process
still dies by SIGTERM, with the same exit status as before.
"""

from __future__ import annotations

import atexit
import os
import signal
import threading

DEFAULT_EXIT_CANCEL_SECONDS = 2.0
_hooked_pid: int | None = None
_sigterm_installed_pid: int | None = None


def exit_cancel_seconds() -> float:
    raw = os.environ.get("SAIL_LITE_EXIT_CANCEL_SECONDS")
    try:
        value = float(raw) if raw else DEFAULT_EXIT_CANCEL_SECONDS
    except ValueError:
        value = DEFAULT_EXIT_CANCEL_SECONDS
    return value if value >= 0 else DEFAULT_EXIT_CANCEL_SECONDS


def cancel_in_flight() -> int:
    """Cancel this process's unscoped in-flight samples on the server (bounded wait)."""
    from sail_lite import _core

    return _core.cancel_unscoped_samples(exit_cancel_seconds())


def install() -> None:
    """Install the exit hooks of this process (idempotent; cheap after the first call)."""
    global _hooked_pid, _sigterm_installed_pid
    pid = os.getpid()
    if _hooked_pid != pid:
        _hooked_pid = pid
        atexit.register(cancel_in_flight)
    if _sigterm_installed_pid != pid and threading.current_thread() is threading.main_thread():
        _sigterm_installed_pid = pid
        try:
            if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
                signal.signal(signal.SIGTERM, _on_sigterm)
        except (ValueError, OSError):  # not settable here (embedded interpreters)
            pass


def _on_sigterm(signum: int, frame: object) -> None:
    try:
        cancel_in_flight()
    finally:
        # Die by SIGTERM as if we had never been here.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
