"""The one exception hierarchy of sail-lite, rooted at :class:`SailError`.

Defined in Python (so they pickle, subclass the matching builtins and show up in tracebacks
as users expect) and raised for the Rust engine: the engine hands back typed
``sail_lite._core.EngineError`` records and :func:`from_engine` turns them into these
classes on the event-loop thread.

Messages and attributes never contain API keys or signed URLs: everything the engine (and so
a server) wrote passes through :mod:`sail_lite._redact` in :func:`from_engine`.
"""

from __future__ import annotations

import builtins

# `typing` (and through it `re`) would double the cost of `import sail_lite`; annotations
# are strings here anyway.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from sail_lite._core import EngineError
    from sail_lite._redact import Redactor

__all__ = [
    "SailError",
    "SailArgumentError",
    "SailEngineError",
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

    message: str

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

    argument: str

    def __init__(self, argument: str, expected: str, got: Any = None, **fields: Any) -> None:
        shown = "" if got is None else f", got {_redacted(_short_repr(got))}"
        super().__init__(f"{argument}: expected {expected}{shown}", argument=argument, **fields)

    def __reduce__(self) -> tuple[Any, ...]:
        # Its __init__ builds the message from parts; rebuild from the finished message instead.
        return (_rebuild_argument, (type(self), self.message, self._fields))


def _rebuild_argument(cls: type[SailArgumentError], message: str, fields: dict[str, Any]) -> SailError:
    err = cls.__new__(cls)
    SailError.__init__(err, message, **fields)
    return err


class SailEngineError(SailError):
    """Base of the errors a sample ends with in the Rust engine (one class per engine error
    kind, see :data:`ENGINE_ERROR_CLASSES`). Every attribute is always set (``None`` when it
    does not apply).

    Attributes: ``status`` (HTTP status of the last failed attempt), ``code`` and
    ``error_type`` from the server's error envelope, ``response_id`` when the error concerns a
    known response, ``attempts`` (HTTP attempts made for the failing step).
    """

    status: int | None
    code: str | None
    error_type: str | None
    response_id: str | None
    attempts: int

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        error_type: str | None = None,
        response_id: str | None = None,
        attempts: int = 0,
        **fields: Any,
    ) -> None:
        super().__init__(message, status=status, code=code, error_type=error_type, response_id=response_id, attempts=attempts, **fields)


class SailAPIStatusError(SailEngineError):
    """The server answered with an error status (after any retries).

    Attributes: ``status`` (HTTP status), ``code`` and ``error_type`` from the error envelope,
    ``response_id`` when the error concerns a known response, ``attempts`` made.
    """


class SailAuthenticationError(SailAPIStatusError):
    """401/403: the API key is missing, wrong or not allowed to do this."""


class SailRateLimitError(SailAPIStatusError):
    """429 that outlived the retry budget or the deadline."""


class SailTimeoutError(SailEngineError, builtins.TimeoutError):
    """A per-request ``timeout`` or the whole-sample ``poll_timeout`` expired.

    When the sample had been created, the engine has already asked the server to cancel it.
    """


class SailConnectionError(SailEngineError, builtins.ConnectionError):
    """The server could not be reached, or the connection broke, on every attempt."""


class SailResponseError(SailEngineError):
    """The response reached a terminal status without a usable sample."""


class SailResponseFailedError(SailResponseError):
    """The response ``failed``; ``code`` and the server's message are kept."""


class SailResponseCancelledError(SailResponseError):
    """The response was cancelled server-side (not by this process)."""


class SailResponseExpiredError(SailResponseError):
    """The response expired, or its result is gone (404 while polling after retention)."""


class SailProtocolError(SailEngineError):
    """The server's answer does not follow the protocol (malformed JSON, mismatched lengths...)."""


ProtocolError = SailProtocolError


class SailInternalError(SailEngineError):
    """A bug in the sail-lite engine (it was caught, and this sample failed; report it)."""


class SailEventLoopError(SailError, RuntimeError):
    """The completer was used from an event loop that is closed or not running."""


class MissingDependencyError(SailError, ImportError):
    """An optional dependency (tinker-cookbook) is needed for this feature."""


def _short_repr(value: Any, limit: int = 80) -> str:
    text = repr(value)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


def _redacted(text: str) -> str:
    # Imported on first use: `re` would double the cost of `import sail_lite`.
    from sail_lite._redact import redact_secrets

    return redact_secrets(text)


# The Rust engine's error kinds (rust/src/sample_error.rs `ErrorKind`), one class each.
ENGINE_ERROR_CLASSES: dict[str, type[SailEngineError]] = {
    "status": SailAPIStatusError,
    "timeout": SailTimeoutError,
    "connection": SailConnectionError,
    "failed": SailResponseFailedError,
    "cancelled": SailResponseCancelledError,
    "expired": SailResponseExpiredError,
    "protocol": SailProtocolError,
    "internal": SailInternalError,
}


def from_engine(error: EngineError, redactor: Redactor | None = None) -> SailEngineError:
    """The exception for an error handed over by the Rust engine, with every text field
    passed through ``redactor`` (a completer's own secrets) or the generic redaction."""
    if redactor is None:
        from sail_lite._redact import GENERIC

        redactor = GENERIC
    kind = error.kind
    status = error.status
    cls = ENGINE_ERROR_CLASSES.get(kind, SailInternalError)
    if kind == "status":
        if status in (401, 403):
            cls = SailAuthenticationError
        elif status == 429:
            cls = SailRateLimitError
    return cls(
        redactor.redact(error.message),
        status=status,
        code=redactor.redact_optional(error.code),
        error_type=redactor.redact_optional(error.error_type),
        response_id=redactor.redact_optional(error.response_id),
        attempts=error.attempts,
    )


class SailUnsupportedError(SailArgumentError, NotImplementedError):
    """Something Sail cannot do was asked for (prompt logprobs, top-k, a seed, inflight weights...).

    ``argument`` names it; the message says what to do instead (e.g. pass a fallback client).
    """

    def __init__(self, argument: str, why: str, got: Any = None, **fields: Any) -> None:
        shown = "" if got is None else f" (got {_short_repr(got)})"
        SailError.__init__(self, f"{argument}: not supported on Sail{shown}: {why}", argument=argument, **fields)
