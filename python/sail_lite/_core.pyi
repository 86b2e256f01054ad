"""Type stubs for the Rust extension ``sail_lite._core`` (checked by ``mypy.stubtest``)."""

import os
from collections.abc import Sequence
from typing import Final, Literal, final

__all__ = [
    "__version__",
    "SamplerClient",
    "CompletionHub",
    "ResponseJournal",
    "Completion",
    "EngineError",
    "EngineEvent",
    "engine_metrics",
    "cancel_unscoped_samples",
    "EmulatorServer",
]

__version__: Final[str]

# The engine's error kinds (rust/src/sample_error.rs), one ``sail_lite.errors`` class each.
_ErrorKind = Literal["status", "timeout", "connection", "failed", "cancelled", "expired", "protocol", "internal"]
# Why a sample stopped: a stop condition, or the token budget.
_StopReason = Literal["stop", "length"]
# What an engine log event reports (see ``sail_lite._logging``).
_EventKind = Literal["retry", "server_cancel", "response_failed", "response_cancelled", "response_expired", "journal_failed"]

@final
class SamplerClient:
    """The engine side of one completer configuration: URLs, auth header, sampling defaults,
    retry and poll policy. Arguments are validated in Python before they get here."""

    def __new__(
        cls,
        *,
        protocol: Literal["responses", "completions"],
        base_url: str,
        api_key: str | None,
        model: str,
        temperature: float,
        top_p: float,
        request_logprobs: bool,
        metadata: dict[str, str],
        completion_window: str,
        timeout: float | None = None,
        poll_timeout: float | None = None,
        max_retries: int = 8,
        max_connections: int = 256,
        ca_bundle: str | None = None,
        poll_overhead: float | None = None,
        retry_base: float | None = None,
        retry_cap: float | None = None,
        prompt_cache_key: bool | str | None = ...,  # True: derived from the prompt
    ) -> SamplerClient: ...
    def submit(
        self,
        hub: CompletionHub,
        request_id: int,
        prompt: Sequence[int],
        max_tokens: int,
        stop_strings: list[str] | None = None,
        stop_token_ids: Sequence[int] | None = None,
        idempotency_key: str | None = None,
        prompt_cache_key: str | None = None,
        journal: ResponseJournal | None = None,
    ) -> None:
        """Start one sample; its :class:`Completion` arrives through ``hub`` under ``request_id``."""

@final
class EngineError:
    """Why a sample failed, as the engine saw it. ``message``, ``code`` and ``error_type`` may
    quote a server and are not redacted: ``sail_lite.errors.from_engine`` redacts them."""

    @property
    def kind(self) -> _ErrorKind: ...
    @property
    def message(self) -> str: ...
    @property
    def status(self) -> int | None: ...
    @property
    def code(self) -> str | None: ...
    @property
    def error_type(self) -> str | None: ...
    @property
    def response_id(self) -> str | None: ...
    @property
    def attempts(self) -> int:
        """HTTP attempts made for the step that failed."""

@final
class Completion:
    """One finished sample: ``tokens``/``logprobs``/``stop_reason`` when it succeeded,
    ``error`` when it did not."""

    @property
    def request_id(self) -> int: ...
    @property
    def tokens(self) -> list[int] | None: ...
    @property
    def logprobs(self) -> list[float] | None: ...
    @property
    def stop_reason(self) -> _StopReason | None: ...
    @property
    def response_id(self) -> str | None: ...
    @property
    def retries(self) -> int:
        """HTTP retries the sample needed, whatever its outcome."""
    @property
    def prompt_cache_hit_tokens(self) -> int:
        """Prompt tokens the server reported as prefix-cache hits (0 on errors)."""
    @property
    def error(self) -> EngineError | None: ...

@final
class EngineEvent:
    """Something worth a log line (a retry, a server-side cancel, a failed or expired
    response), queued by the engine only while the hub's log level lets it through."""

    @property
    def level(self) -> int:
        """A ``logging`` level: ``logging.INFO`` or ``logging.DEBUG``."""
    @property
    def kind(self) -> _EventKind: ...
    @property
    def request_id(self) -> int: ...
    @property
    def message(self) -> str:
        """Human-readable, not yet redacted (may quote a server)."""
    @property
    def status(self) -> int | None: ...
    @property
    def attempt(self) -> int:
        """For a retry: the attempt that failed (1-based)."""
    @property
    def max_attempts(self) -> int: ...
    @property
    def delay(self) -> float | None:
        """For a retry: seconds until the next attempt."""
    @property
    def response_id(self) -> str | None: ...

@final
class CompletionHub:
    """The hand-over point between the engine and one event loop: completions are queued in
    Rust and the first of a burst makes :attr:`fd` readable."""

    def __new__(cls) -> CompletionHub: ...
    @property
    def fd(self) -> int:
        """The pipe end to watch with ``loop.add_reader``."""
    def drain(self) -> list[Completion]:
        """Everything finished since the last drain."""
    def drain_events(self) -> list[EngineEvent]:
        """The log events queued since the last call (none while logging is off)."""
    def set_log_level(self, level: int) -> None:
        """Queue events at ``level`` and above (a ``logging`` level; above CRITICAL: none)."""
    def cancel(self, request_id: int) -> None:
        """Stop one sample (and cancel it server-side)."""
    def in_flight(self) -> int: ...
    def close(self) -> None:
        """Cancel all in-flight samples of this hub and close its pipe."""

def engine_metrics() -> dict[str, int]:
    """Process-wide counters of the engine: HTTP requests, retries, samples, cancels."""

def cancel_unscoped_samples(timeout: float) -> int:
    """Cancel this process's unscoped in-flight samples on the server, waiting at most
    ``timeout`` seconds (the GIL released) for the cancels to be sent; the count cancelled."""

@final
class ResponseJournal:
    """Which response each scoped idempotency key was given, appended to a file (one line per
    accepted create; the last line of a key wins). Read when opened; see ``rust/src/journal.rs``."""

    def __new__(cls, path: str | os.PathLike[str]) -> ResponseJournal: ...
    @property
    def path(self) -> str: ...
    def lookup(self, key: str) -> str | None:
        """The response recorded for ``key``, if any."""

    def __len__(self) -> int: ...

@final
class EmulatorServer:
    """The in-process Sail emulator (``sail_lite.emulator.Emulator`` wraps it)."""

    def __new__(cls, config_json: str) -> EmulatorServer: ...
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def base_url(self) -> str: ...
    def stats_json(self) -> str: ...
    def reset_stats(self) -> None: ...
    def is_running(self) -> bool: ...
    def update(self, patch_json: str) -> None: ...
    def add_archive(self, name: str, data: bytes, ttl_seconds: float) -> str: ...
    def shutdown(self) -> None: ...
