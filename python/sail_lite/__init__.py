"""sail-lite: a fast, dependency-free tinker-cookbook TokenCompleter for sampling RL rollouts
on Sail, with a Rust core.

``import sail_lite`` imports neither tinker, tinker-cookbook nor torch: the completer classes
(which subclass tinker-cookbook's ``TokenCompleter``) load on first access.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs more than the rest of the package
if TYPE_CHECKING:
    from typing import Any

from sail_lite._core import __version__
from sail_lite.errors import (
    MissingDependencyError,
    ProtocolError,
    SailAPIStatusError,
    SailArgumentError,
    SailAuthenticationError,
    SailConnectionError,
    SailEngineError,
    SailError,
    SailEventLoopError,
    SailInternalError,
    SailProtocolError,
    SailRateLimitError,
    SailResponseCancelledError,
    SailResponseError,
    SailResponseExpiredError,
    SailResponseFailedError,
    SailTimeoutError,
    SailUnsupportedError,
)

if TYPE_CHECKING:
    from sail_lite.completer import OpenAICompatibleTokenCompleter, SailTokenCompleter
    from sail_lite.sampling_client import SailSamplingClient
    from sail_lite.scope import SamplingScope, current_scope, sampling_scope
    from sail_lite.tinker import (
        AdapterConfigError,
        SignedUrlExpiredError,
        SignedUrlUnavailableError,
        TinkerCheckpoint,
        TinkerCheckpointError,
        TinkerPath,
        TinkerPathError,
        adapter_config_json,
        get_tinker_checkpoint_signed_url_async,
        load_adapter_config,
        openai_base_url,
        openai_client_kwargs,
        parse_tinker_path,
        resolve_tinker_checkpoint,
        sail_completer_for_checkpoint,
        validate_openai_model,
    )

__all__ = [
    "__version__",
    "SailTokenCompleter",
    "OpenAICompatibleTokenCompleter",
    "SailSamplingClient",
    "engine_metrics",
    "sampling_scope",
    "SamplingScope",
    "current_scope",
    "MissingDependencyError",
    "ProtocolError",
    "SailAPIStatusError",
    "SailArgumentError",
    "SailAuthenticationError",
    "SailConnectionError",
    "SailEngineError",
    "SailError",
    "SailEventLoopError",
    "SailInternalError",
    "SailProtocolError",
    "SailRateLimitError",
    "SailResponseCancelledError",
    "SailResponseError",
    "SailResponseExpiredError",
    "SailResponseFailedError",
    "SailTimeoutError",
    "SailUnsupportedError",
    # Tinker helpers (loaded on first use)
    "get_tinker_checkpoint_signed_url_async",
    "sail_completer_for_checkpoint",
    "resolve_tinker_checkpoint",
    "TinkerCheckpoint",
    "parse_tinker_path",
    "TinkerPath",
    "load_adapter_config",
    "adapter_config_json",
    "validate_openai_model",
    "openai_base_url",
    "openai_client_kwargs",
    "TinkerCheckpointError",
    "SignedUrlUnavailableError",
    "SignedUrlExpiredError",
    "TinkerPathError",
    "AdapterConfigError",
]

_LAZY = {
    "SailTokenCompleter": "sail_lite.completer",
    "OpenAICompatibleTokenCompleter": "sail_lite.completer",
    "SailSamplingClient": "sail_lite.sampling_client",
    # Sampling scopes: derived idempotency keys (sail_lite.scope; loaded on first use).
    "sampling_scope": "sail_lite.scope",
    "SamplingScope": "sail_lite.scope",
    "current_scope": "sail_lite.scope",
    # Tinker helpers: import-light, but loaded on first use to keep `import sail_lite` minimal.
    **{
        name: "sail_lite.tinker"
        for name in (
            "get_tinker_checkpoint_signed_url_async",
            "sail_completer_for_checkpoint",
            "resolve_tinker_checkpoint",
            "TinkerCheckpoint",
            "parse_tinker_path",
            "TinkerPath",
            "load_adapter_config",
            "adapter_config_json",
            "validate_openai_model",
            "openai_base_url",
            "openai_client_kwargs",
            "TinkerCheckpointError",
            "SignedUrlUnavailableError",
            "SignedUrlExpiredError",
            "TinkerPathError",
            "AdapterConfigError",
        )
    },
}


def __dir__() -> list[str]:
    # What tab completion and introspection should find: the public names (lazy ones
    # included), not this module's helpers.
    return sorted({*__all__, *(name for name in globals() if name.startswith("__") and name.endswith("__"))})


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sail_lite' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def engine_metrics() -> dict[str, int]:
    """Process-wide counters of the Rust engine: HTTP requests, retries, samples, cancels."""
    from sail_lite._core import engine_metrics as _metrics

    return dict(_metrics())
