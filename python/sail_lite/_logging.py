"""The ``sail_lite`` logger, and the emission of the engine's log events.

The library installs no handler (as openai-python): configure ``logging`` to see anything.
Levels follow openai-python: each retry at INFO (what failed, status, attempt n of m, the
delay, the response id), a failed / expired / server-cancelled response at INFO, each
server-side cancel we send at DEBUG, a response id that could not be journalled at WARNING. Signed-URL refreshes are logged by ``sail_lite.tinker``.

The engine produces events without touching Python: they are queued in the loop's
completion hub, and only while this logger would emit them (the hub holds the effective
level, refreshed at every submit and wake-up), then logged here on the event loop's thread, in a batch,
after redaction. With logging off, an event is never built.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sail_lite import _core
from sail_lite._redact import GENERIC, Redactor

__all__ = ["logger", "engine_threshold", "emit_events", "OFF"]

logger = logging.getLogger("sail_lite")

#: What the hub is told when no event would be emitted (above every logging level).
OFF = 255


def engine_threshold() -> int:
    """The lowest event level ``logger`` would emit now, or :data:`OFF`.

    ``isEnabledFor`` answers from the logger's cache (cleared by ``setLevel`` and
    ``logging.disable``), so this costs two dict lookups on the submit path."""
    if logger.isEnabledFor(logging.DEBUG):
        return logging.DEBUG
    if logger.isEnabledFor(logging.INFO):
        return logging.INFO
    if logger.isEnabledFor(logging.WARNING):
        return logging.WARNING
    return OFF


def emit_events(events: list[_core.EngineEvent], redactor_for: Callable[[int], Redactor | None]) -> None:
    """Log a batch of engine events, each redacted with its completer's redactor."""
    for event in events:
        redactor = redactor_for(event.request_id) or GENERIC
        if not logger.isEnabledFor(event.level):
            continue
        logger.log(
            event.level,
            "%s",
            redactor.redact(event.message),
            extra={
                "sail_event": event.kind,
                "sail_request_id": event.request_id,
                "sail_status": event.status,
                "sail_attempt": event.attempt,
                "sail_max_attempts": event.max_attempts,
                "sail_delay": event.delay,
                "sail_response_id": redactor.redact_optional(event.response_id),
            },
        )
