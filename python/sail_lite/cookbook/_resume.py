"""Sampling scopes for ``rl.train`` runs: a run resumed from its checkpoint re-attaches to the
samples its crashed predecessor had started, instead of paying for them again.

``rl.train.main`` asks for one sampling client per weights version, in a fixed order: version
``start_batch`` first (the checkpoint it resumes from, or 0), then one after each optimizer
step. Each version's samples are taken in the scope ``sail-lite-run-<id>/weights-<version>``
with a response journal in ``<log_path>/sail_responses/``. A resumed run derives the same keys
for the same requests, finds their responses in the journal and polls them. The LoRA source is
left out of the keys (``lora_in_key=False``): the resumed run exports the same weights under a
new Tinker training run, so their URL changes while the scope name already names them.

The run id is random, made on the first run and kept in the log directory: another run in
another directory never shares keys with this one, and moving the directory keeps them.
"""

from __future__ import annotations

import itertools
import os
import secrets
import threading
from typing import Any

from sail_lite.scope import SamplingScope, sampling_scope

JOURNAL_DIR = "sail_responses"
_RUN_ID_FILE = "run_id"


class RunScopes:
    """The scopes of one ``rl.train.main`` call, one per weights version, in the order asked."""

    def __init__(self, log_path: str, first_version: int) -> None:
        self.directory = os.path.join(log_path, JOURNAL_DIR)
        os.makedirs(self.directory, exist_ok=True)
        self.run_id = _run_id(self.directory)
        self._versions = itertools.count(first_version)
        self._lock = threading.Lock()

    def next_scope(self) -> SamplingScope:
        with self._lock:
            version = next(self._versions)
        return sampling_scope(
            f"sail-lite-run-{self.run_id}/weights-{version:06d}",
            journal=os.path.join(self.directory, f"weights-{version:06d}.journal"),
            lora_in_key=False,
        )


def run_scopes_for(config: Any) -> RunScopes | None:
    """The scopes of an ``rl.train`` config's run, starting where ``rl.train.main`` will (the
    batch of its last resumable checkpoint); None without a ``log_path``."""
    log_path = getattr(config, "log_path", None)
    if not log_path:
        return None
    from tinker_cookbook import checkpoint_utils

    resume = checkpoint_utils.get_last_checkpoint(str(log_path))
    return RunScopes(str(log_path), int(resume.batch) if resume else 0)


def _run_id(directory: str) -> str:
    path = os.path.join(directory, _RUN_ID_FILE)
    try:
        with open(path, encoding="ascii") as f:
            existing = f.read().strip()
        if existing.isalnum():
            return existing
    except FileNotFoundError:
        pass
    run_id = secrets.token_hex(8)
    # Written whole, then renamed: a crash never leaves a half-written id behind.
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="ascii") as f:
        f.write(run_id + "\n")
    os.replace(tmp, path)
    return run_id
