"""Build and validate the PEFT ``adapter_config.json`` that goes with a Tinker LoRA checkpoint.

Sail needs it next to a signed checkpoint URL, as ``metadata.tinker_adapter_config`` (compact JSON,
sorted keys). Sail's LoRA pilot accepts ``peft_type: "LORA"``, ``task_type: "CAUSAL_LM"``, a rank
``r`` up to the base model's maximum (32 for ``moonshotai/Kimi-K2.6``) and a
``base_model_name_or_path`` naming the base.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from sail_lite.errors import SailArgumentError
from sail_lite.tinker.errors import AdapterConfigError

__all__ = [
    "ADAPTER_CONFIG_FILENAME",
    "DEFAULT_MAX_LORA_RANK",
    "load_adapter_config",
    "adapter_config_json",
]

ADAPTER_CONFIG_FILENAME: Final = "adapter_config.json"
DEFAULT_MAX_LORA_RANK: Final = 32

AdapterConfigSource = Mapping[str, Any] | str | bytes | os.PathLike[str]


def _err(field: str | None, expected: str, got: object = None) -> AdapterConfigError:
    argument = "adapter_config" if field is None else f"adapter_config.{field}"
    return AdapterConfigError(argument, expected, got, field=field)


def _read_source(source: object) -> Any:
    if isinstance(source, Mapping):
        return source
    if isinstance(source, bytes):
        try:
            source = source.decode("utf-8")
        except UnicodeDecodeError:
            raise _err(None, "UTF-8 encoded JSON", "undecodable bytes") from None
    if isinstance(source, str) and source.lstrip().startswith(("{", "[")):
        try:
            return json.loads(source)
        except json.JSONDecodeError as exc:
            raise _err(None, f"valid JSON (line {exc.lineno} column {exc.colno}: {exc.msg})") from None
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not str(source):
            raise _err(None, "a dict, a JSON string or a path to adapter_config.json", "")
        if path.is_dir():
            path = path / ADAPTER_CONFIG_FILENAME
        if not path.is_file():
            raise _err(
                None,
                f"a dict, a JSON object string, or a path to an existing {ADAPTER_CONFIG_FILENAME} (or a directory containing one)",
                str(path),
            )
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise _err(None, f"a readable UTF-8 {ADAPTER_CONFIG_FILENAME} ({exc.__class__.__name__})", str(path)) from None
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise _err(None, f"valid JSON in {path} (line {exc.lineno} column {exc.colno}: {exc.msg})") from None
    raise _err(None, "a dict, a JSON object string, or a path to adapter_config.json", type(source).__name__)


def _positive_int(value: object, field: str, *, limit: int | None) -> int:
    if isinstance(value, bool):
        raise _err(field, "a positive integer", value)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or value <= 0:
        raise _err(field, "a positive integer", value)
    if limit is not None and value > limit:
        raise _err(field, f"a LoRA rank <= {limit} (the maximum rank Sail serves for this base)", value)
    return value


def load_adapter_config(
    source: AdapterConfigSource,
    *,
    base_model: str | None = None,
    max_rank: int = DEFAULT_MAX_LORA_RANK,
) -> dict[str, Any]:
    """Load and validate a PEFT LoRA adapter config; return a normalised copy.

    ``source`` is a mapping, a JSON object string (or bytes), or a path (``str`` / ``PathLike``)
    to an ``adapter_config.json`` or to a directory containing one.

    Checks: ``peft_type`` is ``"LORA"`` (any case); ``task_type``, when present, is
    ``"CAUSAL_LM"``; ``r`` is a positive integer ``<= max_rank``; ``base_model_name_or_path`` is
    a non-empty string, equal to ``base_model`` when that is given; ``lora_alpha``, when present,
    is a positive number; the whole config is JSON-serialisable with string keys.

    Normalised: ``peft_type``/``task_type`` upper-cased, ``task_type`` defaults to
    ``"CAUSAL_LM"``, integral floats for ``r`` become ints, ``base_model_name_or_path`` stripped.

    Raises :class:`AdapterConfigError` (a ``SailArgumentError``/``ValueError``) whose ``argument``
    names the field (``adapter_config.r`` ...).
    """
    if isinstance(max_rank, bool) or not isinstance(max_rank, int) or max_rank <= 0:
        raise SailArgumentError("max_rank", "a positive integer", max_rank)
    if base_model is not None and (not isinstance(base_model, str) or not base_model.strip()):
        raise SailArgumentError("base_model", "a non-empty model name or None", base_model)

    raw = _read_source(source)
    if not isinstance(raw, Mapping):
        raise _err(None, "a JSON object (mapping)", type(raw).__name__)
    for key in raw:
        if not isinstance(key, str):
            raise _err(None, "string keys only", key)
    cfg: dict[str, Any] = dict(raw)

    peft_type = cfg.get("peft_type")
    if peft_type is None:
        raise _err("peft_type", '"LORA" (the field is missing)')
    if not isinstance(peft_type, str) or peft_type.upper() != "LORA":
        raise _err("peft_type", '"LORA" (Sail serves LoRA adapters only)', peft_type)
    cfg["peft_type"] = "LORA"

    task_type = cfg.get("task_type")
    if task_type is None:
        cfg["task_type"] = "CAUSAL_LM"
    elif not isinstance(task_type, str) or task_type.upper() != "CAUSAL_LM":
        raise _err("task_type", '"CAUSAL_LM"', task_type)
    else:
        cfg["task_type"] = "CAUSAL_LM"

    if "r" not in cfg:
        raise _err("r", f"a LoRA rank between 1 and {max_rank} (the field is missing)")
    cfg["r"] = _positive_int(cfg["r"], "r", limit=max_rank)

    if "lora_alpha" in cfg and cfg["lora_alpha"] is not None:
        alpha = cfg["lora_alpha"]
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha <= 0:
            raise _err("lora_alpha", "a positive number", alpha)

    base = cfg.get("base_model_name_or_path")
    if base is None:
        raise _err("base_model_name_or_path", "a non-empty base model name (the field is missing)")
    if not isinstance(base, str) or not base.strip():
        raise _err("base_model_name_or_path", "a non-empty base model name", base)
    base = base.strip()
    if base_model is not None and base != base_model.strip():
        raise _err(
            "base_model_name_or_path",
            f"{base_model.strip()!r} (the adapter must be trained on the model it is served with)",
            base,
        )
    cfg["base_model_name_or_path"] = base

    try:
        json.dumps(cfg, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise _err(None, f"JSON-serialisable values ({exc})") from None
    return cfg


def adapter_config_json(cfg: AdapterConfigSource) -> str:
    """The compact, key-sorted JSON Sail expects in ``metadata.tinker_adapter_config``.

    A mapping is serialised as is (``json.dumps(cfg, separators=(",", ":"), sort_keys=True)``);
    a JSON string or a path is first loaded and validated with :func:`load_adapter_config`.
    """
    if not isinstance(cfg, Mapping):
        cfg = load_adapter_config(cfg)
    try:
        return json.dumps(dict(cfg), separators=(",", ":"), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise _err(None, f"JSON-serialisable values ({exc})") from None
