"""The TokenCompleter that keeps a Tinker checkpoint's signed URL fresh.

Imported lazily (it subclasses ``tinker_cookbook.completers.TokenCompleter``, whose import pulls
torch): ``import sail_lite.tinker`` does not import this module.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

from tinker_cookbook.completers import TokenCompleter

from sail_lite._redact import redact_secrets
from sail_lite._validation import seconds
from sail_lite.errors import SailArgumentError, SailError
from sail_lite.tinker.errors import SignedUrlExpiredError
from sail_lite.tinker.paths import TinkerPath, parse_tinker_path
from sail_lite.tinker.signed_urls import (
    DEFAULT_REFRESH_MARGIN_SECONDS,
    DEFAULT_REFRESH_RETRY_SECONDS,
    DEFAULT_UNKNOWN_EXPIRY_SECONDS,
    TinkerCheckpoint,
    format_duration,
    is_signed_url_expired_error,
    resolve_tinker_checkpoint,
    validate_ttl_seconds,
)
from sail_lite.tinker.tinker_compat import rest_client_async

__all__ = ["RefreshingSailCompleter"]

logger = logging.getLogger("sail_lite.tinker")


# Arguments the wrapper owns: the inner completer gets them from the resolved checkpoint.
RESERVED_COMPLETER_KWARGS = frozenset({"lora", "tinker_lora_signed_url", "adapter_config"})


def _default_completer_cls() -> type[Any]:
    import sail_lite

    cls: type[Any] | None = getattr(sail_lite, "SailTokenCompleter", None)
    if cls is None:
        raise SailError("sail_lite.SailTokenCompleter is not available in this build; pass completer_cls=...")
    return cls


class RefreshingSailCompleter(TokenCompleter):
    """A ``TokenCompleter`` sampling from a Tinker LoRA checkpoint on Sail, whose signed URL it
    re-resolves shortly before it expires.

    It holds an inner completer (``sail_lite.SailTokenCompleter`` unless ``completer_cls`` says
    otherwise) built with ``tinker_lora_signed_url=<current URL>`` and the adapter config, and
    builds a fresh one whenever the URL is within ``refresh_margin_seconds`` of its expiry (or, when
    tinker did not report an expiry, of ``resolved_at + unknown_expiry_seconds``). An ``asyncio.Lock``
    makes concurrent callers share one refresh. If a refresh fails while the current URL is still
    valid, the current one is kept (and a refresh retried after ``refresh_retry_seconds``).

    When the server says the URL expired anyway (clock skew, revocation), the wrapper re-resolves
    and retries the sample once; if that fails the same way it raises
    :class:`SignedUrlExpiredError`, which says so plainly.

    Build one with ``await sail_completer_for_checkpoint(...)``. It pickles as its configuration
    plus the current signed URL (the tinker RestClient does not pickle): in another process it
    keeps using that URL and, when it needs a new one, builds ``tinker.RestClient()`` from that
    process's ``TINKER_BASE_URL`` / ``TINKER_API_KEY``.
    """

    def __init__(
        self,
        *,
        tinker_path: str | TinkerPath,
        adapter_config: Mapping[str, Any],
        completer_kwargs: Mapping[str, Any],
        rest_client: Any = None,
        checkpoint: TinkerCheckpoint | None = None,
        ttl_seconds: int | None = None,
        refresh_margin_seconds: float = DEFAULT_REFRESH_MARGIN_SECONDS,
        unknown_expiry_seconds: float = DEFAULT_UNKNOWN_EXPIRY_SECONDS,
        refresh_retry_seconds: float = DEFAULT_REFRESH_RETRY_SECONDS,
        completer_cls: type[Any] | Callable[..., Any] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._path = parse_tinker_path(tinker_path)
        self._adapter_config = dict(adapter_config)
        reserved = RESERVED_COMPLETER_KWARGS.intersection(completer_kwargs)
        if reserved:
            raise SailArgumentError(
                sorted(reserved)[0],
                "to be left out: the wrapper passes the checkpoint's signed URL and adapter config itself",
                None,
            )
        self._completer_kwargs = dict(completer_kwargs)
        self._rest_client = rest_client
        self._checkpoint = checkpoint
        self._ttl_pending = validate_ttl_seconds(ttl_seconds) if checkpoint is None else None
        self._margin = seconds("refresh_margin_seconds", refresh_margin_seconds, allow_zero=True)
        self._unknown_expiry = seconds("unknown_expiry_seconds", unknown_expiry_seconds)
        self._retry_after = seconds("refresh_retry_seconds", refresh_retry_seconds, allow_zero=True)
        self._completer_cls = completer_cls
        self._clock = clock
        self._inner: Any = None
        self._next_attempt_at = -math.inf
        self._refreshes = 0
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None

    # -- public surface -------------------------------------------------------------------------

    @property
    def tinker_path(self) -> str:
        return self._path.path

    @property
    def checkpoint(self) -> TinkerCheckpoint | None:
        """The checkpoint (signed URL + expiry) the current inner completer uses."""
        return self._checkpoint

    @property
    def inner(self) -> Any:
        """The current inner completer (``None`` before the first resolution)."""
        return self._inner

    @property
    def adapter_config(self) -> dict[str, Any]:
        return dict(self._adapter_config)

    @property
    def refresh_count(self) -> int:
        """How many times the signed URL was re-resolved after the first one."""
        return self._refreshes

    async def refresh(self) -> TinkerCheckpoint:
        """Re-resolve the signed URL now and rebuild the inner completer."""
        await self._ensure_inner(stale=self._inner if self._inner is not None else _FORCE)
        assert self._checkpoint is not None
        return self._checkpoint

    async def __call__(self, model_input: Any, stop: Any, *, max_tokens: int | None = None) -> Any:
        inner = await self._ensure_inner()
        try:
            return await self._sample(inner, model_input, stop, max_tokens)
        except Exception as exc:
            if isinstance(exc, SignedUrlExpiredError) or not is_signed_url_expired_error(exc):
                raise
            logger.info(
                "the server reported the signed URL for %s as expired; re-resolving and retrying once",
                self._path.path,
            )
            first = exc
        inner = await self._ensure_inner(stale=inner)
        try:
            return await self._sample(inner, model_input, stop, max_tokens)
        except Exception as exc:
            if not is_signed_url_expired_error(exc):
                raise
            ck = self._checkpoint
            left = (
                f"; Tinker says it is valid for {format_duration(ck.seconds_left(self._now()))} more, so check this machine's clock"
                if ck is not None and ck.seconds_left(self._now()) > 0
                else ""
            )
            raise SignedUrlExpiredError(
                f"the server reported the signed URL for {self._path.path} as expired, even after it "
                f"was re-resolved{left}: {type(exc).__name__}: {redact_secrets(str(exc))} "
                f"(first error: {redact_secrets(str(first))})",
                tinker_path=self._path.path,
            ) from None

    def __repr__(self) -> str:
        ck = self._checkpoint
        url = ck.describe_url(self._now()) if ck is not None else "<not resolved yet>"
        model = self._completer_kwargs.get("model")
        return f"{type(self).__name__}(tinker_path={self._path.path!r}, model={model!r}, url={url}, refreshes={self._refreshes})"

    __str__ = __repr__

    # -- pickling -------------------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_rest_client"] = None
        state["_inner"] = None
        state["_lock"] = None
        state["_lock_loop"] = None
        state["_next_attempt_at"] = -math.inf
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    # -- internals ------------------------------------------------------------------------------

    def _now(self) -> float:
        return (self._clock or time.time)()

    def _get_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            self._lock = asyncio.Lock()
            self._lock_loop = loop
        return self._lock

    def _fresh(self, now: float, stale: Any) -> bool:
        return (
            self._inner is not None
            and stale is not _FORCE
            and self._inner is not stale
            and self._checkpoint is not None
            and not self._checkpoint.needs_refresh(self._margin, now)
        )

    async def _ensure_inner(self, stale: Any = None) -> Any:
        if self._fresh(self._now(), stale):
            return self._inner
        async with self._get_lock():
            now = self._now()
            if self._fresh(now, stale):
                return self._inner
            current = self._checkpoint
            if self._inner is None and stale is None and current is not None and not current.needs_refresh(self._margin, now):
                # Unpickled in another process: the carried URL is still good, no Tinker call.
                self._inner = self._build(current)
                return self._inner
            usable = self._inner is not None and current is not None and not current.is_expired(now)
            if stale is None and usable and now < self._next_attempt_at:
                return self._inner  # backing off after a failed refresh; the URL still works
            try:
                checkpoint = await self._resolve()
            except Exception as exc:
                self._next_attempt_at = now + self._retry_after
                if stale is None and usable:
                    assert current is not None
                    logger.warning(
                        "re-resolving the signed URL for %s failed (%s: %s); keeping the current one, %s",
                        self._path.path,
                        type(exc).__name__,
                        redact_secrets(str(exc)),
                        current.describe_url(now),
                    )
                    return self._inner
                if current is not None and current.is_expired(now):
                    raise SignedUrlExpiredError(
                        f"the signed URL for {self._path.path} expired and re-resolving it failed: "
                        f"{type(exc).__name__}: {redact_secrets(str(exc))}",
                        tinker_path=self._path.path,
                    ) from exc
                raise
            inner = self._build(checkpoint)
            if self._checkpoint is not None:
                self._refreshes += 1
            self._checkpoint = checkpoint
            self._inner = inner
            self._next_attempt_at = -math.inf
            logger.debug("using %r", checkpoint)
            return inner

    async def _resolve(self) -> TinkerCheckpoint:
        if self._rest_client is None:
            self._rest_client = await rest_client_async(None)
        checkpoint = await resolve_tinker_checkpoint(
            self._rest_client,
            self._path,
            ttl_seconds=self._ttl_pending,
            unknown_expiry_seconds=self._unknown_expiry,
            clock=self._clock,
        )
        self._ttl_pending = None
        return checkpoint

    def _build(self, checkpoint: TinkerCheckpoint) -> Any:
        cls = self._completer_cls or _default_completer_cls()
        kwargs = dict(self._completer_kwargs)
        kwargs["tinker_lora_signed_url"] = checkpoint.url
        kwargs["adapter_config"] = dict(self._adapter_config)
        kwargs.setdefault("tinker_lora_name", self._path.path)
        return cls(**kwargs)

    @staticmethod
    async def _sample(inner: Any, model_input: Any, stop: Any, max_tokens: int | None) -> Any:
        if max_tokens is None:
            return await inner(model_input, stop)
        return await inner(model_input, stop, max_tokens=max_tokens)


class _Force:
    def __repr__(self) -> str:
        return "<force refresh>"


_FORCE: Any = _Force()
