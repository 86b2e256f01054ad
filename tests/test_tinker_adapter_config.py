"""sail_lite.tinker.load_adapter_config / adapter_config_json."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import pytest

from sail_lite.errors import SailArgumentError
from sail_lite.tinker import AdapterConfigError, adapter_config_json, load_adapter_config

BASE = "moonshotai/Kimi-K2.6"


def _cfg(**overrides: Any) -> dict[str, Any]:
    # The shape tinker-cookbook's PEFT export writes (tinker_cookbook/weights/_adapter.py).
    cfg: dict[str, Any] = {
        "peft_type": "LORA",
        "auto_mapping": None,
        "base_model_name_or_path": BASE,
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "init_lora_weights": True,
        "lora_alpha": 32,
        "lora_dropout": 0.0,
        "modules_to_save": None,
        "r": 32,
        "rank_pattern": {},
        "alpha_pattern": {},
        "target_modules": ["q_proj", "v_proj"],
        "task_type": "CAUSAL_LM",
    }
    cfg.update(overrides)
    return {k: v for k, v in cfg.items() if v is not _DROP}


_DROP = object()


def test_dict_passes_and_is_copied() -> None:
    src = _cfg()
    out = load_adapter_config(src, base_model=BASE)
    assert out == src
    assert out is not src
    out["r"] = 1
    assert src["r"] == 32


def test_normalises() -> None:
    out = load_adapter_config(
        _cfg(peft_type="lora", task_type="causal_lm", r=8.0, base_model_name_or_path=f"  {BASE} ")
    )
    assert out["peft_type"] == "LORA"
    assert out["task_type"] == "CAUSAL_LM"
    assert out["r"] == 8 and type(out["r"]) is int
    assert out["base_model_name_or_path"] == BASE
    assert load_adapter_config(_cfg(task_type=_DROP))["task_type"] == "CAUSAL_LM"


def test_json_string_and_bytes() -> None:
    text = json.dumps(_cfg(r=16))
    assert load_adapter_config(text)["r"] == 16
    assert load_adapter_config("  \n" + text)["r"] == 16
    assert load_adapter_config(text.encode())["r"] == 16


def test_file_and_directory(tmp_path: Path) -> None:
    (tmp_path / "adapter_config.json").write_text(json.dumps(_cfg(r=4), indent=2) + "\n")
    assert load_adapter_config(tmp_path / "adapter_config.json")["r"] == 4
    assert load_adapter_config(str(tmp_path / "adapter_config.json"))["r"] == 4
    assert load_adapter_config(tmp_path)["r"] == 4
    assert load_adapter_config(str(tmp_path))["r"] == 4


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(AdapterConfigError, match=r"^adapter_config: expected .*existing adapter_config\.json") as info:
        load_adapter_config(tmp_path / "nope")
    assert str(tmp_path / "nope" / "adapter_config.json") not in str(info.value)  # not a directory
    assert str(tmp_path / "nope") in str(info.value)
    with pytest.raises(AdapterConfigError, match="adapter_config.json"):
        load_adapter_config(tmp_path)  # a directory without the file


def test_bad_json(tmp_path: Path) -> None:
    with pytest.raises(AdapterConfigError, match=r"valid JSON \(line 1"):
        load_adapter_config('{"peft_type": "LORA",')
    (tmp_path / "adapter_config.json").write_text("{not json")
    with pytest.raises(AdapterConfigError, match="valid JSON in"):
        load_adapter_config(tmp_path)
    with pytest.raises(AdapterConfigError, match=r"JSON object \(mapping\), got 'list'"):
        load_adapter_config("[1, 2]")


@pytest.mark.parametrize(
    ("overrides", "field", "fragment"),
    [
        ({"peft_type": _DROP}, "peft_type", "field is missing"),
        ({"peft_type": "IA3"}, "peft_type", "got 'IA3'"),
        ({"peft_type": 1}, "peft_type", '"LORA"'),
        ({"task_type": "SEQ_CLS"}, "task_type", "got 'SEQ_CLS'"),
        ({"r": _DROP}, "r", "field is missing"),
        ({"r": 0}, "r", "positive integer, got 0"),
        ({"r": -4}, "r", "positive integer, got -4"),
        ({"r": True}, "r", "positive integer, got True"),
        ({"r": "8"}, "r", "positive integer, got '8'"),
        ({"r": 8.5}, "r", "positive integer, got 8.5"),
        ({"r": 64}, "r", "<= 32"),
        ({"lora_alpha": 0}, "lora_alpha", "positive number"),
        ({"lora_alpha": "32"}, "lora_alpha", "positive number"),
        ({"base_model_name_or_path": _DROP}, "base_model_name_or_path", "field is missing"),
        ({"base_model_name_or_path": ""}, "base_model_name_or_path", "non-empty"),
        ({"base_model_name_or_path": "   "}, "base_model_name_or_path", "non-empty"),
        ({"base_model_name_or_path": 7}, "base_model_name_or_path", "non-empty"),
    ],
)
def test_field_errors_name_the_field(overrides: dict[str, Any], field: str, fragment: str) -> None:
    with pytest.raises(AdapterConfigError) as info:
        load_adapter_config(_cfg(**overrides))
    err = info.value
    assert isinstance(err, SailArgumentError) and isinstance(err, ValueError)
    assert str(err).startswith(f"adapter_config.{field}: expected ")
    assert fragment in str(err)
    assert err.field == field  # type: ignore[attr-defined]
    assert err.argument == f"adapter_config.{field}"  # type: ignore[attr-defined]


def test_max_rank() -> None:
    assert load_adapter_config(_cfg(r=64), max_rank=64)["r"] == 64
    with pytest.raises(AdapterConfigError, match="<= 8"):
        load_adapter_config(_cfg(r=16), max_rank=8)
    with pytest.raises(SailArgumentError, match="^max_rank: expected a positive integer"):
        load_adapter_config(_cfg(), max_rank=0)


def test_base_model_must_match_when_given() -> None:
    with pytest.raises(AdapterConfigError, match=r"expected 'Qwen/Qwen3-8B'.*got 'moonshotai/Kimi-K2.6'"):
        load_adapter_config(_cfg(), base_model="Qwen/Qwen3-8B")
    assert load_adapter_config(_cfg(), base_model=f"{BASE} ")["base_model_name_or_path"] == BASE


def test_non_serialisable_and_non_string_keys() -> None:
    with pytest.raises(AdapterConfigError, match="JSON-serialisable"):
        load_adapter_config(_cfg(extra={1, 2}))
    with pytest.raises(AdapterConfigError, match="JSON-serialisable"):
        load_adapter_config(_cfg(lora_dropout=float("nan")))
    with pytest.raises(AdapterConfigError, match="string keys"):
        load_adapter_config({**_cfg(), 3: "x"})


@pytest.mark.parametrize("bad", [None, 3, 2.5, ["a"]])
def test_unsupported_source_types(bad: object) -> None:
    with pytest.raises(AdapterConfigError, match="^adapter_config: expected a dict"):
        load_adapter_config(bad)  # type: ignore[arg-type]


def test_adapter_config_json_is_compact_and_sorted(tmp_path: Path) -> None:
    cfg = _cfg()
    text = adapter_config_json(cfg)
    assert text == json.dumps(cfg, separators=(",", ":"), sort_keys=True)
    assert " " not in text.replace("moonshotai/Kimi-K2.6", "")
    keys = list(json.loads(text))
    assert keys == sorted(keys)
    # Strings and paths are loaded (and validated) first.
    assert adapter_config_json(json.dumps(cfg, indent=4)) == text
    (tmp_path / "adapter_config.json").write_text(json.dumps(cfg))
    assert adapter_config_json(tmp_path) == text
    with pytest.raises(AdapterConfigError):
        adapter_config_json(json.dumps(_cfg(r=0)))


def test_error_pickles() -> None:
    with pytest.raises(AdapterConfigError) as info:
        load_adapter_config(_cfg(r=99))
    again = pickle.loads(pickle.dumps(info.value))
    assert type(again) is AdapterConfigError
    assert str(again) == str(info.value)
    assert again.field == "r"  # type: ignore[attr-defined]
