"""Sampling scopes: idempotency keys derived from what a sample is, so a restarted run
re-attaches to the samples of the run it replaces instead of paying for them twice.

Inside ``with sampling_scope("run-42/step-7"):`` (or with ``sampling_scope=`` on a completer)
each sample's ``Idempotency-Key`` is::

    sl1-<digest of the scope name>-<digest of the request>-<k>

where the request digest covers everything that defines the sample (model, window, prompt
tokens, sampling parameters, max tokens, stop, metadata, the LoRA source without its URL's
query or credentials) and ``k`` counts identical requests in the scope (the k-th identical
request gets k). So a GRPO group of 8 identical prompts is 8 distinct samples, and a rerun
that asks again, in any order, gets the same 8 keys, and Sail answers each with its stored
response instead of new inference. Digests are BLAKE2b over a canonical encoding (sorted
JSON plus the prompt as little-endian u32s): no ``hash()``, no dict order, no event-loop
order, so keys are the same in every process and on every machine.

The scope follows ``contextvars`` (asyncio tasks created inside inherit it). Scopes of one
name that are open at the same time share one occurrence counter; a name that is entered
again after every holder of it has gone starts counting from 1, which is what a rerun does
(so: one scope name per set of samples, e.g. the run and the step). The counter is per
process: two processes sampling identical requests in one scope name get the same samples.

Sail compares bodies: a key reused with another body is refused (400 ``idempotency_error``).
A rerun whose bodies differ in what the key leaves out (a LoRA URL signed or exported again)
therefore re-attaches through a response journal (``journal=``, ``rust/src/journal.rs``):
the response id of each accepted create, which the rerun polls instead of creating.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import os
import sys
import threading
import weakref
from array import array
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from sail_lite import _core
from sail_lite.errors import SailArgumentError

__all__ = [
    "SamplingScope",
    "sampling_scope",
    "current_scope",
    "active_scope",
    "request_fingerprint",
    "idempotency_key_for",
    "lora_source_identity",
]

KEY_PREFIX = "sl1"
_DIGEST_BYTES = 16
# Keys are ~60 characters whatever the name (Sail allows 255): the name enters only as a digest.
_MAX_NAME_CHARS = 4096


class _Counters:
    """The occurrence counters of one scope name, shared by all its handles in this process."""

    __slots__ = ("name_digest", "counts", "lock", "__weakref__")

    def __init__(self, name: str) -> None:
        self.name_digest = _digest(name.encode("utf-8"), 8)
        self.counts: dict[str, int] = {}
        self.lock = threading.Lock()


class SamplingScope:
    """A handle on a named scope: a context manager (``with`` or ``async with``) that makes it
    the current scope, and the source of its keys. Handles of one name share one set of
    occurrence counters (thread- and task-safe). Use :func:`sampling_scope` to get one."""

    __slots__ = ("name", "journal", "lora_in_key", "_counters", "_tokens")

    def __init__(self, name: str, counters: _Counters, journal: _core.ResponseJournal | None, lora_in_key: bool) -> None:
        self.name = name
        #: Where each sample's response id is recorded under its key (see :func:`sampling_scope`).
        self.journal = journal
        #: Whether the LoRA source is part of each request's key.
        self.lora_in_key = lora_in_key
        self._counters = counters
        self._tokens: list[contextvars.Token[SamplingScope | None]] = []

    def idempotency_key(self, fingerprint: str) -> str:
        """The key of the next occurrence of the request ``fingerprint`` (from
        :func:`request_fingerprint`) in this scope: the k-th call with one fingerprint gets k."""
        c = self._counters
        with c.lock:
            k = c.counts.get(fingerprint, 0) + 1
            c.counts[fingerprint] = k
        return f"{KEY_PREFIX}-{c.name_digest}-{fingerprint}-{k}"

    def __enter__(self) -> SamplingScope:
        self._tokens.append(_current.set(self))
        return self

    def __exit__(self, *exc: object) -> None:
        _current.reset(self._tokens.pop())

    async def __aenter__(self) -> SamplingScope:
        return self.__enter__()

    async def __aexit__(self, *exc: object) -> None:
        self.__exit__(*exc)

    def __repr__(self) -> str:
        extra = "" if self.journal is None else f", journal={str(self.journal.path)!r}"
        extra += "" if self.lora_in_key else ", lora_in_key=False"
        return f"SamplingScope({self.name!r}{extra})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Another process gets its own counters for the same name, and opens the journal itself.
        journal = None if self.journal is None else str(self.journal.path)
        return (_restore, (self.name, journal, self.lora_in_key))


def _restore(name: str, journal: str | None, lora_in_key: bool) -> SamplingScope:
    return sampling_scope(name, journal=journal, lora_in_key=lora_in_key)


_current: contextvars.ContextVar[SamplingScope | None] = contextvars.ContextVar("sail_lite_sampling_scope", default=None)
_counters: weakref.WeakValueDictionary[str, _Counters] = weakref.WeakValueDictionary()
_counters_lock = threading.Lock()
_journals: weakref.WeakValueDictionary[str, _core.ResponseJournal] = weakref.WeakValueDictionary()


def sampling_scope(name: str, *, journal: str | os.PathLike[str] | None = None, lora_in_key: bool = True) -> SamplingScope:
    """A handle on the scope named ``name``: use it as ``with sampling_scope(name):`` (or
    ``async with``), or pass it (or just the name) as a completer's ``sampling_scope=``.
    Every handle of one name alive in this process shares its occurrence counters.

    ``journal``: a file (created if missing; its directory must exist) where each sample's
    response id is recorded under its key as soon as Sail accepts the create. A rerun finds its
    keys there and polls those responses instead of creating, so it re-attaches even when its
    create bodies differ from the earlier run's in what the key leaves out (Sail refuses a key
    reused with another body): e.g. a LoRA exported again under a new signed URL.

    ``lora_in_key=False`` leaves the LoRA source (and ``tinker_lora_name``) out of the keys:
    for a scope whose name already identifies the weights (a training run's step), whose rerun
    exports the same weights under a new path. Use it with a journal.
    """
    if not isinstance(name, str) or not name or len(name) > _MAX_NAME_CHARS:
        expected = f"a non-empty scope name (a str of at most {_MAX_NAME_CHARS} characters)"
        raise SailArgumentError("sampling_scope", expected, name if not isinstance(name, str) else f"{len(name)} characters")
    if not isinstance(lora_in_key, bool):
        raise SailArgumentError("lora_in_key", "True or False", lora_in_key)
    opened = None if journal is None else _journal_at(journal)
    with _counters_lock:
        counters = _counters.get(name)
        if counters is None:
            counters = _Counters(name)
            _counters[name] = counters
    return SamplingScope(name, counters, opened, lora_in_key)


def _journal_at(path: Any) -> _core.ResponseJournal:
    """The journal at ``path``, opened once per process while any scope holds it."""
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise SailArgumentError("journal", "a file path (str or os.PathLike)", path)
    resolved = os.path.abspath(os.fspath(path))
    with _counters_lock:
        journal = _journals.get(resolved)
        if journal is None:
            try:
                journal = _core.ResponseJournal(resolved)
            except OSError as exc:
                raise SailArgumentError("journal", "a file path whose directory exists and is writable", str(exc)) from None
            _journals[resolved] = journal
    return journal


def current_scope() -> SamplingScope | None:
    """The scope of the innermost ``with sampling_scope(...)`` in this context, if any."""
    return _current.get()


def active_scope(default: SamplingScope | None) -> SamplingScope | None:
    """The scope a sample is taken in: the ``with`` block's, else the completer's default."""
    scope = _current.get()
    return scope if scope is not None else default


def as_scope(value: SamplingScope | str | None) -> SamplingScope | None:
    """A completer's ``sampling_scope=`` argument (a scope, a name or None) as a scope."""
    if value is None or isinstance(value, SamplingScope):
        return value
    return sampling_scope(value)


def lora_source_identity(source: str | None) -> str | None:
    """What identifies a LoRA source in a key: a URL without its query, fragment or
    credentials (a signed URL's signature changes on every re-signing; the path names the
    checkpoint), anything else as is."""
    if source is None or not source.startswith(("http://", "https://")):
        return source
    parts = urlsplit(source)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"


def request_fingerprint(
    *,
    model: str,
    completion_window: str,
    prompt_tokens: Iterable[int],
    max_tokens: int,
    temperature: float,
    top_p: float,
    stop: str | Iterable[str] | Iterable[int] | None = None,
    lora: str | None = None,
    metadata: Mapping[str, str] | None = None,
    request_logprobs: bool = True,
    lora_in_key: bool = True,
) -> str:
    """A stable digest (32 hex characters) of everything that defines one sample.

    ``lora`` is the LoRA source as sent (a Sail LoRA name or a signed URL: only its scheme,
    host and path count). ``metadata`` is the rest of the request's metadata; its ``lora``
    entry is treated like ``lora`` and ``completion_window`` is taken from the argument.
    ``lora_in_key=False`` leaves the LoRA source and its ``tinker_lora_name`` label out (see
    :func:`sampling_scope`).
    """
    meta = dict(metadata or {})
    meta.pop("completion_window", None)
    if lora is None:
        lora = meta.get("lora")
    meta.pop("lora", None)
    if not lora_in_key:
        lora = None
        meta.pop("tinker_lora_name", None)
    if isinstance(stop, str):
        stop_part: Any = {"strings": [stop]}
    elif stop is None:
        stop_part = None
    else:
        items: list[Any] = list(stop)
        stop_part = {"strings": items} if items and isinstance(items[0], str) else {"ids": [int(t) for t in items]} if items else None
    header = {
        "v": 1,
        "model": model,
        "window": completion_window,
        "max_tokens": int(max_tokens),
        "temperature": float(temperature),
        "top_p": float(top_p),
        "stop": stop_part,
        "lora": lora_source_identity(lora),
        "metadata": meta,
        "logprobs": bool(request_logprobs),
    }
    h = hashlib.blake2b(digest_size=_DIGEST_BYTES)
    h.update(json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii"))
    h.update(b"\x00")
    h.update(_prompt_bytes(prompt_tokens))
    return h.hexdigest()


def idempotency_key_for(scope: SamplingScope | str, fingerprint: str) -> str:
    """The key of the next occurrence of ``fingerprint`` in ``scope`` (a scope or its name;
    hold the scope object while sampling in it, or its counters may start over)."""
    resolved = as_scope(scope)
    assert resolved is not None
    return resolved.idempotency_key(fingerprint)


def _prompt_bytes(tokens: Iterable[int]) -> bytes:
    packed = array("I", tokens)
    if sys.byteorder == "big":
        packed.byteswap()
    return packed.tobytes()


def _digest(data: bytes, size: int) -> str:
    return hashlib.blake2b(data, digest_size=size).hexdigest()
