"""Signed download URLs for Tinker checkpoints, as Sail's ``metadata.lora`` wants them.

Works with the ``tinker`` release that is installed, whatever its method surface:

- tinker 0.38 (and other recent releases): ``RestClient()`` is constructed directly;
  ``set_checkpoint_ttl_from_tinker_path`` returns an awaitable future (its ``_async`` twin is
  deprecated); the only signed URLs it hands out are per-file ones for ``external_weights``
  checkpoints (``get_external_weights_urls``); there is no archive-URL method.
- older releases (e.g. 0.20 .. 0.30): ``service_client.create_rest_client()``; sync-only methods
  returning ``concurrent.futures.Future`` with ``_async`` coroutine twins, including
  ``get_checkpoint_archive_url_from_tinker_path[_async]`` (one signed archive URL + expiry).

A signed URL is a bearer credential: it never appears in a repr, an exception message or a log
line produced here.
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from sail_lite._redact import redact_url
from sail_lite._validation import seconds
from sail_lite.errors import SailArgumentError, SailError
from sail_lite.tinker.errors import (
    SignedUrlExpiredError,
    SignedUrlUnavailableError,
    TinkerCheckpointError,
)
from sail_lite.tinker.paths import TinkerPath, parse_tinker_path
from sail_lite.tinker.tinker_compat import (
    ARCHIVE_METHOD,
    EXTERNAL_METHOD,
    TTL_METHOD,
    call_rest,
    has_method,
    plan_url_method,
    raise_wrapped,
    rest_client_async,
)

__all__ = [
    "MIN_TTL_SECONDS",
    "MAX_TTL_SECONDS",
    "DEFAULT_UNKNOWN_EXPIRY_SECONDS",
    "TinkerCheckpoint",
    "validate_ttl_seconds",
    "resolve_tinker_checkpoint",
    "get_tinker_checkpoint_signed_url_async",
    "is_signed_url_expired_error",
]

logger = logging.getLogger("sail_lite.tinker")

MIN_TTL_SECONDS: Final = 3600
"""Tinker's smallest checkpoint TTL: one hour."""
MAX_TTL_SECONDS: Final = 10 * 365 * 24 * 3600
"""Tinker's largest checkpoint TTL: ten years (of 365 days)."""
DEFAULT_UNKNOWN_EXPIRY_SECONDS: Final = 900.0
# How long before a signed URL's expiry a refreshing completer replaces it, and how soon it
# tries again after a failed refresh (defaults of sail_completer_for_checkpoint).
DEFAULT_REFRESH_MARGIN_SECONDS: Final = 300.0
DEFAULT_REFRESH_RETRY_SECONDS: Final = 30.0
"""How long a signed URL is assumed to live when tinker does not report its expiry (tinker's own
fallback for archive redirects without an ``Expires`` header is 15 minutes)."""

ADAPTER_WEIGHTS_FILENAME: Final = "adapter_model.safetensors"


UrlSource = Literal["archive", "external_weights"]
Clock = Callable[[], float]


# --------------------------------------------------------------------------------------------
# TTL
# --------------------------------------------------------------------------------------------


def validate_ttl_seconds(ttl_seconds: object, *, argument: str = "ttl_seconds") -> int | None:
    """``None`` (leave the checkpoint's TTL alone) or an int in ``3600 .. 10 years``.

    Raises :class:`SailArgumentError` before anything is sent to Tinker.
    """
    if ttl_seconds is None:
        return None
    expected = f"an integer number of seconds between {MIN_TTL_SECONDS} (1 hour) and {MAX_TTL_SECONDS} (10 years), or None"
    if isinstance(ttl_seconds, bool):
        raise SailArgumentError(argument, expected, ttl_seconds)
    if isinstance(ttl_seconds, float) and math.isfinite(ttl_seconds) and ttl_seconds.is_integer():
        ttl_seconds = int(ttl_seconds)
    if not isinstance(ttl_seconds, int):
        raise SailArgumentError(argument, expected, ttl_seconds)
    if not MIN_TTL_SECONDS <= ttl_seconds <= MAX_TTL_SECONDS:
        raise SailArgumentError(argument, expected, ttl_seconds)
    return ttl_seconds


# --------------------------------------------------------------------------------------------
# The resolved checkpoint
# --------------------------------------------------------------------------------------------


def format_duration(seconds: float) -> str:
    seconds = abs(seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _format_instant(epoch: float) -> str:
    return _dt.datetime.fromtimestamp(epoch, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, eq=False)
class TinkerCheckpoint:
    """A Tinker checkpoint with a signed URL Sail can download, and when that URL expires.

    - ``path``: the parsed ``tinker://`` path
    - ``url``: the signed URL (a bearer credential: never shown by ``repr``/``str``)
    - ``expires_at``: when the URL expires (epoch seconds), as tinker reported it; ``None`` if not
    - ``resolved_at``: when it was obtained (epoch seconds, by the resolving clock)
    - ``valid_until``: ``expires_at``, or ``resolved_at + unknown_expiry_seconds`` when tinker
      reported no expiry: the instant refreshes are scheduled against
    - ``files``: for ``external_weights`` checkpoints, every file's signed URL (keyed by the path
      relative to the checkpoint root); ``url`` is the one for ``adapter_model.safetensors``
    - ``source``: ``"archive"`` (older tinker's archive URL) or ``"external_weights"``
    - ``ttl_seconds``: the checkpoint TTL that was set while resolving, if any
    """

    path: TinkerPath
    url: str = field(repr=False)
    expires_at: float | None
    resolved_at: float
    valid_until: float
    source: UrlSource
    files: Mapping[str, str] = field(default_factory=dict, repr=False)
    ttl_seconds: int | None = None

    @property
    def tinker_path(self) -> str:
        return self.path.path

    @property
    def adapter_config_url(self) -> str | None:
        """The signed URL of the checkpoint's ``adapter_config.json`` when tinker listed one."""
        for name, url in self.files.items():
            if name == "adapter_config.json" or name.endswith("/adapter_config.json"):
                return url
        return None

    def seconds_left(self, now: float | None = None) -> float:
        """Seconds until ``valid_until`` (negative once past)."""
        return self.valid_until - (time.time() if now is None else now)

    def is_expired(self, now: float | None = None) -> bool:
        """True once the expiry tinker reported has passed (False when tinker reported none)."""
        if self.expires_at is None:
            return False
        return (time.time() if now is None else now) >= self.expires_at

    def needs_refresh(self, margin_seconds: float, now: float | None = None) -> bool:
        """True when ``valid_until`` is less than the margin away.

        The margin is capped at half the URL's lifetime, so a URL that lives shorter than the
        margin is still used for a while instead of being re-resolved on every call.
        """
        lifetime = max(0.0, self.valid_until - self.resolved_at)
        margin = min(max(0.0, margin_seconds), lifetime / 2)
        return self.seconds_left(now) <= margin

    def signed_url(self, now: float | None = None) -> str:
        """``url``, or :class:`SignedUrlExpiredError` when its reported expiry has passed."""
        now = time.time() if now is None else now
        if self.is_expired(now):
            assert self.expires_at is not None
            raise SignedUrlExpiredError(
                f"the signed URL for {self.path.path} expired {format_duration(now - self.expires_at)} ago "
                f"(at {_format_instant(self.expires_at)}); signed Tinker URLs are short-lived: resolve a "
                "fresh one (await checkpoint.refreshed(rest_client) or resolve_tinker_checkpoint(...)), or "
                "use sail_completer_for_checkpoint(...), which re-resolves before expiry",
                tinker_path=self.path.path,
            )
        return self.url

    async def refreshed(
        self,
        service_client_or_rest_client: Any = None,
        *,
        unknown_expiry_seconds: float = DEFAULT_UNKNOWN_EXPIRY_SECONDS,
        clock: Clock | None = None,
    ) -> TinkerCheckpoint:
        """A freshly resolved copy (the TTL is not set again)."""
        return await resolve_tinker_checkpoint(
            service_client_or_rest_client,
            self.path,
            unknown_expiry_seconds=unknown_expiry_seconds,
            clock=clock,
        )

    def describe_url(self, now: float | None = None) -> str:
        """``<signed url for https://host/path, expires in 53 min>``: safe to log."""
        now = time.time() if now is None else now
        where = redact_url(self.url).split("?", 1)[0]
        if self.expires_at is None:
            when = f"expiry unknown, refresh due in {format_duration(self.valid_until - now)}"
            if self.valid_until <= now:
                when = "expiry unknown, refresh overdue"
        elif self.expires_at > now:
            when = f"expires in {format_duration(self.expires_at - now)}"
        else:
            when = f"expired {format_duration(now - self.expires_at)} ago"
        return f"<signed url for {where}, {when}>"

    def __repr__(self) -> str:
        extra = f", files={sorted(self.files)!r}" if self.files else ""
        ttl = f", ttl_seconds={self.ttl_seconds}" if self.ttl_seconds is not None else ""
        return f"TinkerCheckpoint(path={self.path.path!r}, url={self.describe_url()}{extra}{ttl})"

    __str__ = __repr__


def _get_field(result: Any, *names: str) -> Any:
    for name in names:
        if isinstance(result, Mapping):
            if name in result and result[name] is not None:
                return result[name]
        else:
            value = getattr(result, name, None)
            if value is not None:
                return value
    return None


def _to_epoch(value: Any, tp: TinkerPath) -> float | None:
    if value is None:
        return None
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=_dt.UTC)
        timestamp: float = value.timestamp()
        return timestamp
    if isinstance(value, bool):
        value = None
    elif isinstance(value, (int, float)) and math.isfinite(value):
        # Epoch seconds, or milliseconds from a server that counts those.
        return float(value) / 1000.0 if value > 1e11 else float(value)
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        try:
            return _to_epoch(_dt.datetime.fromisoformat(text), tp)
        except ValueError:
            pass
    logger.warning("ignoring an unreadable signed-URL expiry for %s: %r", tp.path, type(value).__name__)
    return None


def _pick_adapter_file(files: Mapping[str, str], tp: TinkerPath) -> str:
    if ADAPTER_WEIGHTS_FILENAME in files:
        return ADAPTER_WEIGHTS_FILENAME
    suffix = [k for k in files if k.endswith("/" + ADAPTER_WEIGHTS_FILENAME)]
    if len(suffix) == 1:
        return suffix[0]
    safetensors = [k for k in files if k.endswith(".safetensors")]
    if len(safetensors) == 1:
        return safetensors[0]
    if len(files) == 1:
        return next(iter(files))
    raise SignedUrlUnavailableError(
        f"tinker listed the files {sorted(files)!r} for {tp.path} but none is a single "
        f"{ADAPTER_WEIGHTS_FILENAME}: Sail loads a PEFT LoRA adapter "
        "(adapter_model.safetensors + adapter_config.json); export one with "
        "training_client.save_weights_external(name)",
        tinker_path=tp.path,
    )


def _checkpoint_from_result(
    method: str,
    result: Any,
    tp: TinkerPath,
    *,
    now: float,
    unknown_expiry_seconds: float,
    ttl_seconds: int | None,
) -> TinkerCheckpoint:
    files: dict[str, str] = {}
    source: UrlSource
    if method == EXTERNAL_METHOD:
        source = "external_weights"
        urls = _get_field(result, "urls")
        if not isinstance(urls, Mapping) or not urls:
            raise TinkerCheckpointError(
                f"tinker's {EXTERNAL_METHOD} answer for {tp.path} lists no files",
                tinker_path=tp.path,
            )
        files = {str(k): str(v) for k, v in urls.items()}
        url = files[_pick_adapter_file(files, tp)]
    else:
        source = "archive"
        url = result if isinstance(result, str) else _get_field(result, "url", "signed_url", "archive_url", "checkpoint_archive_url")
        if not isinstance(url, str) or not url:
            raise TinkerCheckpointError(f"tinker's {ARCHIVE_METHOD} answer for {tp.path} has no URL", tinker_path=tp.path)
    expires_at = None if isinstance(result, str) else _to_epoch(_get_field(result, "expires", "expires_at", "expiration"), tp)
    valid_until = expires_at if expires_at is not None else now + unknown_expiry_seconds
    return TinkerCheckpoint(
        path=tp,
        url=url,
        expires_at=expires_at,
        resolved_at=now,
        valid_until=valid_until,
        source=source,
        files=files,
        ttl_seconds=ttl_seconds,
    )


async def resolve_tinker_checkpoint(
    service_client_or_rest_client: Any,
    tinker_path: str | TinkerPath,
    *,
    ttl_seconds: int | None = None,
    unknown_expiry_seconds: float = DEFAULT_UNKNOWN_EXPIRY_SECONDS,
    clock: Clock | None = None,
) -> TinkerCheckpoint:
    """Resolve a signed URL Sail can download for ``tinker_path``, remembering its expiry.

    ``service_client_or_rest_client``: a ``tinker.ServiceClient``, a ``tinker.RestClient`` (any
    release) or ``None`` to construct ``tinker.RestClient()`` from the environment.

    With ``ttl_seconds`` (3600 .. 10 years) the checkpoint's TTL is set first, so per-step RL
    sampler checkpoints are deleted by Tinker instead of piling up. ``None`` leaves the TTL alone.

    Raises :class:`SignedUrlUnavailableError` (before any request, TTL included) when the
    installed tinker cannot sign this kind of checkpoint, :class:`TinkerCheckpointError` when
    tinker fails, :class:`SailArgumentError` for bad arguments.
    """
    tp = parse_tinker_path(tinker_path)
    ttl = validate_ttl_seconds(ttl_seconds)
    unknown_expiry_seconds = seconds("unknown_expiry_seconds", unknown_expiry_seconds)
    now_fn = clock or time.time
    rest = await rest_client_async(service_client_or_rest_client)
    method = plan_url_method(rest, tp)
    if ttl is not None:
        if not has_method(rest, TTL_METHOD):
            raise SignedUrlUnavailableError(
                f"ttl_seconds needs a RestClient with {TTL_METHOD}; {type(rest).__name__} has none "
                "(upgrade tinker, or pass ttl_seconds=None)",
                tinker_path=tp.path,
            )
        try:
            await call_rest(rest, TTL_METHOD, tp.path, ttl)
        except SailError:
            raise
        except Exception as exc:
            raise_wrapped(f"setting a {ttl} s TTL", tp, exc)
    try:
        result = await call_rest(rest, method, tp.path)
    except SailError:
        raise
    except Exception as exc:
        raise_wrapped(f"getting a signed URL ({method})", tp, exc)
    checkpoint = _checkpoint_from_result(
        method,
        result,
        tp,
        now=now_fn(),
        unknown_expiry_seconds=unknown_expiry_seconds,
        ttl_seconds=ttl,
    )
    logger.debug("resolved %r", checkpoint)
    return checkpoint


async def get_tinker_checkpoint_signed_url_async(
    service_client_or_rest_client: Any,
    tinker_path: str | TinkerPath,
    *,
    ttl_seconds: int | None = None,
) -> str:
    """The signed URL Sail downloads for ``tinker_path`` (for ``SailTokenCompleter(tinker_lora_signed_url=...)``).

    With ``ttl_seconds`` the checkpoint's TTL is set first. See :func:`resolve_tinker_checkpoint`,
    which also reports the URL's expiry, and ``sail_completer_for_checkpoint``, which keeps a
    completer's URL fresh.
    """
    checkpoint = await resolve_tinker_checkpoint(service_client_or_rest_client, tinker_path, ttl_seconds=ttl_seconds)
    return checkpoint.url


# --------------------------------------------------------------------------------------------
# Recognising "the signed URL expired" in a server's error
# --------------------------------------------------------------------------------------------

_URL_WORDS: Final = ("url", "signature", "signed", "lora", "adapter", "checkpoint", "download")


def is_signed_url_expired_error(exc: BaseException) -> bool:
    """Whether ``exc`` says a signed (LoRA checkpoint) URL expired.

    Looks at an error ``code`` (``lora_url_expired``, ``signed_url_expired``, ``ExpiredToken`` ...)
    and at the message (``"... signed URL has expired"``, storage's ``"Request has expired"``).
    An expired *response* (Sail's result retention) is not an expired URL.
    """
    code = getattr(exc, "code", None)
    code_text = code.lower() if isinstance(code, str) else ""
    if code_text and "expired" in code_text:
        if "expiredtoken" in code_text or any(w in code_text for w in _URL_WORDS):
            return True
    message = str(getattr(exc, "message", None) or exc).lower()
    if "request has expired" in message or "expiredtoken" in message:
        return True
    if "expire" not in message:
        return False
    if any(w in message for w in _URL_WORDS):
        return True
    return False
