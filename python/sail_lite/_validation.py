"""Argument checks shared by the completers. Every failure is a SailArgumentError that names
the argument and what was expected, raised before any request is made."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from sail_lite._redact import redact_url
from sail_lite.errors import SailArgumentError

MAX_TOKEN_ID = 2**31 - 1
MAX_TOKENS = 2**31 - 1  # what the engine's u32 fields (and any server) can carry
MAX_RETRIES = 1_000
MAX_CACHE_KEY_CHARS = 256  # the engine's bound too (py_api.rs)


def require_str(name: str, value: Any, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str) or (not allow_empty and not value.strip()):
        raise SailArgumentError(name, "a non-empty string", value)
    return encodable(name, value)


def encodable(name: str, value: str) -> str:
    """``value`` if it can be sent as UTF-8 (no lone surrogates, e.g. from a mis-decoded
    file name); otherwise a SailArgumentError now rather than a UnicodeEncodeError later."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise SailArgumentError(name, "valid Unicode text (no lone surrogates)", f"a lone surrogate at index {exc.start}") from None
    return value


def optional_str(name: str, value: Any) -> str | None:
    return None if value is None else require_str(name, value)


def prompt_cache_key(name: str, value: Any) -> bool | str:
    """``True``: a key derived from the prompt; ``False``/``None``: no key; a string: that key."""
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, str):
        return cache_key(name, value)
    raise SailArgumentError(name, "True (automatic), False or None (off), or a key string", value)


def cache_key(name: str, value: Any) -> str:
    """One explicit ``prompt_cache_key``: a short printable label."""
    if not isinstance(value, str) or not value or len(value) > MAX_CACHE_KEY_CHARS or not value.isprintable():
        raise SailArgumentError(name, f"a non-empty printable string of at most {MAX_CACHE_KEY_CHARS} characters", value)
    return value


def positive_int(name: str, value: Any, *, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or (maximum is not None and value > maximum):
        bound = "an int >= 1" if maximum is None else f"an int in 1..{maximum}"
        raise SailArgumentError(name, bound, value)
    return value


def non_negative_int(name: str, value: Any, *, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or (maximum is not None and value > maximum):
        raise SailArgumentError(name, "an int >= 0" if maximum is None else f"an int in 0..{maximum}", value)
    return value


def number_in(name: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not low <= value <= high:
        raise SailArgumentError(name, f"a number in [{low:g}, {high:g}]", value)
    return float(value)


def seconds(name: str, value: object, *, allow_zero: bool = False) -> float:
    """A finite number of seconds, > 0 (or >= 0 with ``allow_zero``)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        if value > 0 or (allow_zero and value == 0):
            return float(value)
    raise SailArgumentError(name, "a non-negative number of seconds" if allow_zero else "a positive number of seconds", value)


def optional_seconds(name: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise SailArgumentError(name, "a positive number of seconds or None", value)
    return float(value)


def string_metadata(name: str, value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SailArgumentError(name, "a dict of str -> str", value)
    out: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not key:
            raise SailArgumentError(name, "non-empty string keys", key)
        encodable(f"{name} key", key)
        if not isinstance(item, str):
            raise SailArgumentError(f"{name}[{key!r}]", "a string value (Sail metadata values are strings)", item)
        out[key] = encodable(f"{name}[{key!r}]", item)
    return out


def adapter_config_object_json(value: Any) -> str:
    """The completer's ``adapter_config`` (a dict or a JSON string) as the compact, key-sorted
    JSON Sail expects, checking only that it is a JSON object: the completer passes what the
    caller says through. :func:`sail_lite.tinker.adapter_config_json` is the strict one (it
    also reads files and checks the PEFT fields Sail needs) for checkpoints resolved here."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise SailArgumentError("adapter_config", "a JSON object (dict or JSON string)", f"invalid JSON: {exc.msg}") from None
    if not isinstance(value, Mapping):
        raise SailArgumentError("adapter_config", "a JSON object (dict or JSON string)", type(value).__name__)
    try:
        # allow_nan=False: NaN/Infinity are not JSON, and only the server would notice.
        return json.dumps(dict(value), separators=(",", ":"), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise SailArgumentError("adapter_config", "JSON-serialisable values", str(exc)) from None


def prompt_tokens(model_input: Any) -> list[int]:
    """Token ids from a tinker ModelInput, anything with to_ints(), or a list of ints.
    (Element types and ranges are checked in Rust while copying, in the same pass.)"""
    if isinstance(model_input, list):
        tokens = model_input
    elif (single_chunk := _single_text_chunk_tokens(model_input)) is not None:
        tokens = single_chunk
    else:
        to_ints = getattr(model_input, "to_ints", None)
        if to_ints is None:
            if not isinstance(model_input, tuple):
                raise SailArgumentError(
                    "model_input", "a tinker.ModelInput, an object with to_ints(), or a list of token ids", type(model_input).__name__
                )
            tokens = list(model_input)
        else:
            try:
                tokens = to_ints()
            except (ValueError, TypeError) as exc:
                raise SailArgumentError("model_input", "token chunks only (no images)", str(exc)) from None
    if not tokens:
        raise SailArgumentError("model_input", "a non-empty prompt", "0 tokens")
    return tokens


def _single_text_chunk_tokens(model_input: Any) -> list[int] | None:
    """The token list of a tinker ModelInput made of one text chunk (what ``from_ints`` and
    the cookbook's renderers build), handed over as is: the engine copies it, so rebuilding
    it with ``to_ints()`` first would only cost time. None for anything else."""
    chunks = getattr(model_input, "chunks", None)
    if type(chunks) is not list or len(chunks) != 1:
        return None
    chunk = chunks[0]
    if getattr(chunk, "type", None) != "encoded_text":
        return None
    tokens = getattr(chunk, "tokens", None)
    return tokens if type(tokens) is list else None


def normalise_stop(stop: Any) -> tuple[list[str] | None, list[int] | None]:
    """A stop condition as (strings, token ids): a string, a list of strings, a token id,
    or a list of token ids."""
    if stop is None:
        return None, None
    if isinstance(stop, str):
        if not stop:
            raise SailArgumentError("stop", "a non-empty stop string", stop)
        return [encodable("stop", stop)], None
    if isinstance(stop, int) and not isinstance(stop, bool):
        if not 0 <= stop <= MAX_TOKEN_ID:
            raise SailArgumentError("stop", "a token id in 0..2**31-1", stop)
        return None, [stop]
    if not isinstance(stop, (list, tuple)):
        raise SailArgumentError("stop", "a string, a list of strings, a token id or a list of token ids", type(stop).__name__)
    if not stop:
        return None, None
    if all(isinstance(s, str) for s in stop):
        if any(not s for s in stop):
            raise SailArgumentError("stop", "non-empty stop strings", stop)
        return [encodable("stop", s) for s in stop], None
    if all(isinstance(t, int) and not isinstance(t, bool) for t in stop):
        if any(not 0 <= t <= MAX_TOKEN_ID for t in stop):
            raise SailArgumentError("stop", "token ids in 0..2**31-1", stop)
        return None, list(stop)
    raise SailArgumentError("stop", "all strings or all token ids (not a mix)", stop)


def http_url(name: str, value: Any) -> str:
    """An http(s) API root with a host, without a trailing slash.

    A query or fragment would end up in the middle of every request URL, and user info
    would never be sent (the API key is the credential), so all three are refused; the
    message shows the URL redacted, since they may hold a token or a password."""
    from urllib.parse import urlsplit

    if (
        isinstance(value, str)
        and value.startswith(("http://", "https://"))
        and value.isascii()
        and value.isprintable()
        and " " not in value
    ):
        try:
            parts = urlsplit(value)
            _ = parts.port  # raises ValueError for a malformed port
        except ValueError:
            parts = None
        if parts is not None and parts.hostname:
            if "@" in parts.netloc:
                raise SailArgumentError(name, "a URL without user:password@ (pass the key as api_key)", redact_url(value))
            if parts.query or parts.fragment or "?" in value or "#" in value:
                raise SailArgumentError(name, "an API root URL without a query or fragment", redact_url(value))
            return value.rstrip("/")
    shown = redact_url(value) if isinstance(value, str) else type(value).__name__
    raise SailArgumentError(name, "an http:// or https:// URL with a host", shown)


def readable_file(name: str, value: Any) -> str | None:
    if value is None:
        return None
    import os

    if not isinstance(value, (str, os.PathLike)) or not os.path.isfile(value) or not os.access(value, os.R_OK):
        raise SailArgumentError(name, "the path of a readable PEM file", value)
    return os.fspath(value)
