"""The one exception hierarchy of sail-lite, rooted at :class:`SailError`.

Defined in Python (so they pickle, subclass the matching builtins and show up in tracebacks
as users expect) and raised for the Rust engine: the engine hands back plain tuples and
:func:`from_engine` turns them into these classes on the event-loop thread.

Messages never contain API keys or signed URLs: the engine redacts URLs before they get here.
"""

from __future__ import annotations

import builtins

# `typing` (and through it `re`) would double the cost of `import sail_lite`; annotations
# are strings here anyway.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "SailError",
    "SailArgumentError",
    "SailAPIStatusError",
    "SailAuthenticationError",
    "SailRateLimitError",
    "SailTimeoutError",
    "SailConnectionError",
    "SailResponseError",
    "SailResponseFailedError",
    "SailResponseCancelledError",
    "SailResponseExpiredError",
    "SailProtocolError",
    "ProtocolError",
    "SailInternalError",
    "SailEventLoopError",
    "MissingDependencyError",
    "SailUnsupportedError",
]


class SailError(Exception):
    """Base class of every error sail-lite raises.

    Structured fields (``status``, ``code``, ``response_id`` ...) are keyword attributes that
    survive pickling, so errors cross process boundaries (spawned rollout workers) intact.
    """

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        for name, value in fields.items():
            setattr(self, name, value)
        self._fields = fields

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.message, self._fields))

    def __str__(self) -> str:
        return self.message


def _rebuild(cls: type[SailError], message: str, fields: dict[str, Any]) -> SailError:
    return cls(message, **fields)


class SailArgumentError(SailError, ValueError):
    """A bad argument, raised before any HTTP request is made.

    ``argument`` names the offending argument (or ``argument.field``).
    """

    def __init__(self, argument: str, expected: str, got: Any = None, **fields: Any) -> None:
        shown = "" if got is None else f", got {_short_repr(got)}"
        super().__init__(f"{argument}: expected {expected}{shown}", argument=argument, **fields)

    def __reduce__(self) -> tuple[Any, ...]:
        # Its __init__ builds the message from parts; rebuild from the finished message instead.
        return (_rebuild_argument, (type(self), self.message, self._fields))


def _rebuild_argument(cls: type[SailArgumentError], message: str, fields: dict[str, Any]) -> SailError:
    err = cls.__new__(cls)
    SailError.__init__(err, message, **fields)
    return err


class SailAPIStatusError(SailError):
    """The server answered with an error status (after any retries).

    Attributes: ``status`` (HTTP status), ``code`` and ``error_type`` from the error envelope,
    ``response_id`` when the error concerns a known response, ``attempts`` made.
    """


class SailAuthenticationError(SailAPIStatusError):
    """401/403: the API key is missing, wrong or not allowed to do this."""


class SailRateLimitError(SailAPIStatusError):
    """429 that outlived the retry budget or the deadline."""


class SailTimeoutError(SailError, builtins.TimeoutError):
    """A per-request ``timeout`` or the whole-sample ``poll_timeout`` expired.

    When the sample had been created, the engine has already asked the server to cancel it.
    """


class SailConnectionError(SailError, builtins.ConnectionError):
    """The server could not be reached, or the connection broke, on every attempt."""


class SailResponseError(SailError):
    """The response reached a terminal status without a usable sample."""


class SailResponseFailedError(SailResponseError):
    """The response ``failed``; ``code`` and the server's message are kept."""


class SailResponseCancelledError(SailResponseError):
    """The response was cancelled server-side (not by this process)."""


class SailResponseExpiredError(SailResponseError):
    """The response expired, or its result is gone (404 while polling after retention)."""


class SailProtocolError(SailError):
    """The server's answer does not follow the protocol (malformed JSON, mismatched lengths...)."""


ProtocolError = SailProtocolError


class SailInternalError(SailError):
    """A bug in the sail-lite engine, caught before it could lose the sample. Please report it."""


class SailEventLoopError(SailError, RuntimeError):
    """The completer was used from an event loop that is closed or not running."""


class MissingDependencyError(SailError, ImportError):
    """An optional dependency (tinker-cookbook) is needed for this feature."""


def _short_repr(value: Any, limit: int = 80) -> str:
    text = repr(value)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


# Error kinds the Rust engine reports (see rust/src/sample_error.rs).
_KINDS: dict[str, type[SailError]] = {
    "argument": SailArgumentError,
    "status": SailAPIStatusError,
    "timeout": SailTimeoutError,
    "connection": SailConnectionError,
    "failed": SailResponseFailedError,
    "cancelled": SailResponseCancelledError,
    "expired": SailResponseExpiredError,
    "protocol": SailProtocolError,
    "internal": SailInternalError,
}


def from_engine(
    kind: str,
    message: str,
    status: int | None,
    code: str | None,
    response_id: str | None,
    attempts: int,
) -> SailError:
    """Build the exception for an error tuple handed over by the Rust engine."""
    fields: dict[str, Any] = {
        "status": status,
        "code": code,
        "response_id": response_id,
        "attempts": attempts,
    }
    cls = _KINDS.get(kind, SailError)
    if kind == "status":
        if status in (401, 403):
            cls = SailAuthenticationError
        elif status == 429:
            cls = SailRateLimitError
    if cls is SailArgumentError:
        return SailArgumentError(code or "request", message)
    return cls(message, **fields)


class SailUnsupportedError(SailArgumentError, NotImplementedError):
    """Something Sail cannot do was asked for (prompt logprobs, top-k, a seed, inflight weights...).

    ``argument`` names it; the message says what to do instead (e.g. pass a fallback client).
    """

    def __init__(self, argument: str, why: str, got: Any = None, **fields: Any) -> None:
        shown = "" if got is None else f" (got {_short_repr(got)})"
        SailError.__init__(self, f"{argument}: not supported on Sail{shown}: {why}", argument=argument, **fields)
