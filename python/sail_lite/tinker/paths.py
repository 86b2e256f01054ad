"""Parse ``tinker://<run>/<weights|sampler_weights|external_weights>/<id>`` checkpoint paths."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from sail_lite.tinker.errors import TinkerPathError

__all__ = ["CheckpointKind", "TinkerPath", "parse_tinker_path", "TINKER_SCHEME"]

CheckpointKind = Literal["training", "sampler", "external"]

TINKER_SCHEME: Final = "tinker://"

_SEGMENT_TO_KIND: Final[dict[str, CheckpointKind]] = {
    "weights": "training",
    "sampler_weights": "sampler",
    "external_weights": "external",
}
_KIND_TO_SEGMENT: Final[dict[CheckpointKind, str]] = {v: k for k, v in _SEGMENT_TO_KIND.items()}
_SHAPE: Final = "tinker://<run>/<weights|sampler_weights|external_weights>/<id>"
# Common misspellings of the kind segment, with the one meant.
_SEGMENT_HINTS: Final[dict[str, str]] = {
    "weight": "weights",
    "training": "weights",
    "train": "weights",
    "sampler": "sampler_weights",
    "sampler_weight": "sampler_weights",
    "sampling_weights": "sampler_weights",
    "external": "external_weights",
    "external_weight": "external_weights",
}


@dataclass(frozen=True, slots=True)
class TinkerPath:
    """A parsed Tinker checkpoint path.

    - ``run_id``: the training run id (may contain ``:``, e.g. ``0034d8c9-...:train:0``)
    - ``kind``: ``"training"`` (``weights``), ``"sampler"`` (``sampler_weights``) or
      ``"external"`` (``external_weights``, a HuggingFace/PEFT export)
    - ``checkpoint_id``: the last segment (``000010``, ``final`` ...)
    - ``path``: the original string
    """

    run_id: str
    kind: CheckpointKind
    checkpoint_id: str
    path: str

    @property
    def segment(self) -> str:
        """The kind as it appears in the path: ``weights``, ``sampler_weights`` or ``external_weights``."""
        return _KIND_TO_SEGMENT[self.kind]

    @property
    def tinker_checkpoint_id(self) -> str:
        """``<segment>/<id>``: what tinker's own ``ParsedCheckpointTinkerPath`` calls the checkpoint id
        (and what its REST routes put after ``/checkpoints/``)."""
        return f"{self.segment}/{self.checkpoint_id}"

    def __str__(self) -> str:
        return self.path


def _fail(argument: str, expected: str, got: object) -> TinkerPathError:
    return TinkerPathError(argument, expected, got)


def parse_tinker_path(path: str | TinkerPath, *, argument: str = "tinker_path") -> TinkerPath:
    """Parse ``tinker://<run>/<weights|sampler_weights|external_weights>/<id>``.

    Raises :class:`TinkerPathError` (a ``ValueError``) naming ``argument`` and saying what is
    wrong for anything else: another scheme, missing or extra segments, an unknown kind,
    whitespace, a query string or fragment.
    """
    if isinstance(path, TinkerPath):
        return path
    if not isinstance(path, str):
        raise _fail(argument, f"a {_SHAPE} string", type(path).__name__)
    if any(ch.isspace() for ch in path) or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in path):
        raise _fail(argument, f"a {_SHAPE} path without whitespace or control characters", path)
    if not path.startswith(TINKER_SCHEME):
        if "://" in path:
            scheme = path.split("://", 1)[0]
            what = f"a {_SHAPE} path (scheme must be tinker://, not {scheme}://)"
        else:
            what = f"a {_SHAPE} path starting with tinker://"
        raise _fail(argument, what, path)
    if "?" in path or "#" in path:
        raise _fail(argument, f"a {_SHAPE} path without a query string or fragment", path)
    rest = path[len(TINKER_SCHEME) :]
    parts = rest.split("/")
    if len(parts) == 4 and parts[3] == "":
        raise _fail(argument, f"a {_SHAPE} path without a trailing slash", path)
    if len(parts) != 3:
        raise _fail(
            argument,
            f"a {_SHAPE} path with exactly three segments after tinker:// (found {len(parts)})",
            path,
        )
    run_id, segment, checkpoint_id = parts
    if not run_id:
        raise _fail(argument, f"a {_SHAPE} path with a non-empty training run id", path)
    if segment not in _SEGMENT_TO_KIND:
        hint = _SEGMENT_HINTS.get(segment.lower())
        suffix = f"; did you mean {hint!r}?" if hint else ""
        raise _fail(
            argument,
            f"a checkpoint kind of 'weights', 'sampler_weights' or 'external_weights' as the second segment (found {segment!r}{suffix})",
            path,
        )
    if not checkpoint_id:
        raise _fail(argument, f"a {_SHAPE} path with a non-empty checkpoint id", path)
    return TinkerPath(run_id=run_id, kind=_SEGMENT_TO_KIND[segment], checkpoint_id=checkpoint_id, path=path)
