"""A tiny PEFT LoRA checkpoint archive, built in pure Python (no torch, no safetensors package).

The archive looks like a Tinker checkpoint export: a ``.tar.gz`` holding
``adapter_model.safetensors`` and ``adapter_config.json``. Its weights are pseudo-random but fully
determined by ``seed``, so the same seed always gives the same bytes (and the same samples from
the emulator, which turns an adapter's weights into a per-token logit bias).
"""

from __future__ import annotations

import gzip
import io
import json
import random
import struct
import tarfile
from typing import Any

__all__ = [
    "DEFAULT_BASE_MODEL",
    "TARGET_MODULES",
    "adapter_config",
    "safetensors_bytes",
    "lora_archive",
]

DEFAULT_BASE_MODEL = "moonshotai/Kimi-K2.6"
TARGET_MODULES = ("q_proj", "v_proj")
HIDDEN_SIZE = 64


def adapter_config(rank: int = 8, base_model: str = DEFAULT_BASE_MODEL) -> dict[str, Any]:
    """The PEFT ``adapter_config.json`` that goes with :func:`lora_archive`."""
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": rank,
        "lora_alpha": 2 * rank,
        "lora_dropout": 0.0,
        "bias": "none",
        "target_modules": list(TARGET_MODULES),
        "base_model_name_or_path": base_model,
    }


def _f32_le(values: list[float]) -> bytes:
    return struct.pack(f"<{len(values)}f", *values)


def safetensors_bytes(tensors: dict[str, tuple[list[int], list[float]]]) -> bytes:
    """Serialise ``{name: (shape, flat F32 values)}`` in the safetensors format: an 8-byte
    little-endian header length, a JSON header (dtype, shape, byte offsets per tensor), then
    the raw data."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    chunks = []
    offset = 0
    for name, (shape, values) in tensors.items():
        data = _f32_le(values)
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    header_bytes = json.dumps(header, separators=(",", ":")).encode()
    # Pad with spaces so the data starts 8-byte aligned, as the reference writer does.
    header_bytes += b" " * (-len(header_bytes) % 8)
    return struct.pack("<Q", len(header_bytes)) + header_bytes + b"".join(chunks)


def _lora_tensors(rank: int, seed: int, hidden: int) -> dict[str, tuple[list[int], list[float]]]:
    rng = random.Random(seed)

    def uniform(count: int, bound: float) -> list[float]:
        return [rng.uniform(-bound, bound) for _ in range(count)]

    tensors = {}
    for module in TARGET_MODULES:
        prefix = f"base_model.model.model.layers.0.self_attn.{module}"
        # lora_A at PEFT's Kaiming-uniform scale; lora_B non-zero, as after training
        # (an all-zero lora_B, PEFT's initialisation, would be the identity).
        tensors[f"{prefix}.lora_A.weight"] = ([rank, hidden], uniform(rank * hidden, hidden**-0.5))
        tensors[f"{prefix}.lora_B.weight"] = ([hidden, rank], uniform(hidden * rank, 0.05))
    return tensors


def _tar_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    info.mtime = 0  # no timestamps, so the archive is byte-for-byte reproducible
    tar.addfile(info, io.BytesIO(data))


def lora_archive(seed: int = 0, *, rank: int = 8, base_model: str = DEFAULT_BASE_MODEL, hidden: int = HIDDEN_SIZE) -> bytes:
    """A ``.tar.gz`` LoRA checkpoint (``adapter_model.safetensors`` + ``adapter_config.json``),
    deterministic in its arguments."""
    config = json.dumps(adapter_config(rank, base_model), sort_keys=True).encode()
    weights = safetensors_bytes(_lora_tensors(rank, seed, hidden))
    tar_buffer = io.BytesIO()
    with tarfile.open(fileobj=tar_buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        _tar_member(tar, "adapter_config.json", config)
        _tar_member(tar, "adapter_model.safetensors", weights)
    # gzip.compress with mtime=0 keeps the gzip header free of timestamps too.
    return gzip.compress(tar_buffer.getvalue(), mtime=0)
