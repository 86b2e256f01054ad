"""A process-wide cache of resolved Tinker checkpoints, keyed by their ``tinker://`` path.

Rollout workers unpickle a new ``SailSamplingClient`` for every task; without this, each task
would ask Tinker for the same signed URL again. Entries are returned only while their URL is
not due for a refresh.
"""

from __future__ import annotations

import threading
from typing import Any

from sail_lite.tinker.signed_urls import DEFAULT_REFRESH_MARGIN_SECONDS

_lock = threading.Lock()
_checkpoints: dict[str, Any] = {}
MAX_ENTRIES = 256


def cached_checkpoint(tinker_path: str) -> Any:
    """The resolved checkpoint for ``tinker_path`` if one is cached and still fresh, else None."""
    with _lock:
        checkpoint = _checkpoints.get(tinker_path)
    if checkpoint is None or checkpoint.needs_refresh(DEFAULT_REFRESH_MARGIN_SECONDS):
        return None
    return checkpoint


def remember_checkpoint(checkpoint: Any) -> None:
    """Keep ``checkpoint`` (a ``TinkerCheckpoint``, or None: ignored) for later clients."""
    if checkpoint is None:
        return
    with _lock:
        if len(_checkpoints) >= MAX_ENTRIES and checkpoint.tinker_path not in _checkpoints:
            _checkpoints.pop(next(iter(_checkpoints)))  # the oldest
        _checkpoints[checkpoint.tinker_path] = checkpoint
