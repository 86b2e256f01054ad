"""Tinker helpers for sail-lite: checkpoint paths, signed checkpoint URLs (with TTL and expiry
handling), a completer that keeps its signed URL fresh, PEFT adapter configs, and Tinker's
OpenAI-compatible endpoint.

Importing this package imports neither tinker, tinker_cookbook, torch nor openai: those are
imported inside the functions that need them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sail_lite._redact import redact_secrets, redact_url
from sail_lite.tinker.adapter_config import (
    ADAPTER_CONFIG_FILENAME,
    DEFAULT_MAX_LORA_RANK,
    adapter_config_json,
    load_adapter_config,
)
from sail_lite.tinker.completer import sail_completer_for_checkpoint
from sail_lite.tinker.errors import (
    AdapterConfigError,
    SignedUrlExpiredError,
    SignedUrlUnavailableError,
    TinkerCheckpointError,
    TinkerNotInstalledError,
    TinkerPathError,
)
from sail_lite.tinker.openai_endpoint import (
    DEFAULT_TINKER_BASE_URL,
    OpenAIClientKwargs,
    openai_base_url,
    openai_client_kwargs,
    tinker_base_url,
    validate_openai_model,
)
from sail_lite.tinker.paths import CheckpointKind, TinkerPath, parse_tinker_path
from sail_lite.tinker.signed_urls import (
    DEFAULT_UNKNOWN_EXPIRY_SECONDS,
    MAX_TTL_SECONDS,
    MIN_TTL_SECONDS,
    TinkerCheckpoint,
    get_tinker_checkpoint_signed_url_async,
    is_signed_url_expired_error,
    resolve_tinker_checkpoint,
    validate_ttl_seconds,
)

if TYPE_CHECKING:
    from sail_lite.tinker._refreshing import RefreshingSailCompleter

__all__ = [
    # paths
    "CheckpointKind",
    "TinkerPath",
    "parse_tinker_path",
    # signed URLs
    "MIN_TTL_SECONDS",
    "MAX_TTL_SECONDS",
    "DEFAULT_UNKNOWN_EXPIRY_SECONDS",
    "TinkerCheckpoint",
    "validate_ttl_seconds",
    "resolve_tinker_checkpoint",
    "get_tinker_checkpoint_signed_url_async",
    "is_signed_url_expired_error",
    # refreshing completer
    "sail_completer_for_checkpoint",
    "RefreshingSailCompleter",
    # adapter config
    "ADAPTER_CONFIG_FILENAME",
    "DEFAULT_MAX_LORA_RANK",
    "load_adapter_config",
    "adapter_config_json",
    # OpenAI-compatible endpoint
    "DEFAULT_TINKER_BASE_URL",
    "OpenAIClientKwargs",
    "tinker_base_url",
    "openai_base_url",
    "openai_client_kwargs",
    "validate_openai_model",
    # errors
    "TinkerPathError",
    "AdapterConfigError",
    "TinkerCheckpointError",
    "SignedUrlUnavailableError",
    "SignedUrlExpiredError",
    "TinkerNotInstalledError",
    # redaction
    "redact_url",
    "redact_secrets",
]


def __getattr__(name: str) -> Any:
    # RefreshingSailCompleter subclasses tinker_cookbook's TokenCompleter (whose import pulls
    # torch), so it is only imported when asked for.
    if name == "RefreshingSailCompleter":
        from sail_lite.tinker._refreshing import RefreshingSailCompleter

        return RefreshingSailCompleter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
