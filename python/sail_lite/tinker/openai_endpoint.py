"""Tinker's OpenAI-compatible endpoint: ``<TINKER_BASE_URL>/oai/api/v1``.

The model name is a ``tinker://<run>/sampler_weights/<id>`` path (or a base model name) and the
Tinker API key is the bearer token. Nothing here imports ``openai``.
"""

from __future__ import annotations

import os
from typing import Any, Final
from urllib.parse import urlsplit

from sail_lite.errors import SailArgumentError
from sail_lite.tinker.errors import TinkerPathError
from sail_lite.tinker.paths import TINKER_SCHEME, parse_tinker_path

__all__ = [
    "DEFAULT_TINKER_BASE_URL",
    "OPENAI_PATH",
    "tinker_base_url",
    "openai_base_url",
    "openai_client_kwargs",
    "validate_openai_model",
    "OpenAIClientKwargs",
]

DEFAULT_TINKER_BASE_URL: Final = "https://tinker.thinkingmachines.dev/services/tinker-prod"
OPENAI_PATH: Final = "/oai/api/v1"


def tinker_base_url(base_url: str | None = None) -> str:
    """``base_url``, else ``$TINKER_BASE_URL``, else Tinker's production URL; no trailing slash.

    Empty values count as unset (as in tinker itself).
    """
    if base_url is not None and not isinstance(base_url, str):
        raise SailArgumentError("base_url", "an http(s) URL string or None", type(base_url).__name__)
    resolved = base_url or os.environ.get("TINKER_BASE_URL") or DEFAULT_TINKER_BASE_URL
    resolved = resolved.strip().rstrip("/")
    try:
        parts = urlsplit(resolved)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        ok = False
    if not ok or parts.query or parts.fragment:
        argument = "base_url" if base_url else "TINKER_BASE_URL"
        raise SailArgumentError(argument, "an http:// or https:// URL without query or fragment", resolved)
    return resolved


def openai_base_url(base_url: str | None = None) -> str:
    """``<base_url or $TINKER_BASE_URL or the default>/oai/api/v1``.

    A ``base_url`` that already ends in ``/oai/api/v1`` is returned as is.
    """
    root = tinker_base_url(base_url)
    if root.endswith(OPENAI_PATH):
        return root
    return root + OPENAI_PATH


class OpenAIClientKwargs(dict[str, Any]):
    """The kwargs for ``openai.OpenAI(**kwargs)`` / ``openai.AsyncOpenAI(**kwargs)``.

    A plain ``dict`` whose ``repr``/``str`` hide the API key.
    """

    def __repr__(self) -> str:
        shown = {k: ("<redacted>" if k == "api_key" else v) for k, v in self.items()}
        return f"OpenAIClientKwargs({shown!r})"

    __str__ = __repr__


def openai_client_kwargs(*, base_url: str | None = None, api_key: str | None = None, **extra: Any) -> OpenAIClientKwargs:
    """``{"base_url": openai_base_url(base_url), "api_key": <key>, **extra}``.

    The key is ``api_key``, else ``$TINKER_API_KEY``; a missing key is a
    :class:`SailArgumentError` now rather than a 401 later. ``extra`` (``timeout``,
    ``max_retries``, ``default_headers`` ...) is passed through for the openai client.
    """
    if api_key is not None and not isinstance(api_key, str):
        raise SailArgumentError("api_key", "a Tinker API key string or None", type(api_key).__name__)
    key = api_key or os.environ.get("TINKER_API_KEY")
    if not key or not key.strip():
        raise SailArgumentError("api_key", "a Tinker API key (pass api_key=... or set TINKER_API_KEY)", None)
    for name in ("base_url", "api_key"):
        extra.pop(name, None)
    kwargs = OpenAIClientKwargs(base_url=openai_base_url(base_url), api_key=key.strip())
    kwargs.update(extra)
    return kwargs


def validate_openai_model(model: str) -> str:
    """Check a model name for Tinker's OpenAI-compatible endpoint and return it unchanged.

    A ``tinker://`` model must be a sampler checkpoint (``tinker://<run>/sampler_weights/<id>``);
    any other non-empty name (a base model) passes through.
    """
    if not isinstance(model, str) or not model.strip():
        raise SailArgumentError("model", "a non-empty model name or tinker:// sampler path", model)
    if model.strip() != model:
        raise SailArgumentError("model", "a model name without surrounding whitespace", model)
    if not model.startswith(TINKER_SCHEME) and model.lower().startswith(TINKER_SCHEME):
        raise TinkerPathError("model", "a lower-case tinker:// scheme", model)
    if not model.startswith(TINKER_SCHEME):
        return model
    tp = parse_tinker_path(model, argument="model")
    if tp.kind != "sampler":
        raise TinkerPathError(
            "model",
            "a sampler checkpoint, tinker://<run>/sampler_weights/<id> (Tinker's OpenAI-compatible "
            f"endpoint samples from sampler weights, and this path's kind is {tp.segment}: save one with "
            "training_client.save_weights_for_sampler(name))",
            model,
        )
    return model
