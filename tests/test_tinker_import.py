"""``import sail_lite.tinker`` stays light: no tinker, tinker_cookbook, torch or openai."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("tinker", "tinker_cookbook", "torch", "openai", "transformers")


def _modules_after(code: str) -> list[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_is_light() -> None:
    assert _modules_after("import sail_lite.tinker") == []


def test_pure_helpers_stay_light() -> None:
    code = """
import sail_lite.tinker as t
t.parse_tinker_path('tinker://r:train:0/sampler_weights/1')
t.load_adapter_config({'peft_type': 'LORA', 'r': 8, 'base_model_name_or_path': 'b'})
t.adapter_config_json({'r': 8})
t.openai_base_url('http://h:1')
t.validate_ttl_seconds(3600)
"""
    assert _modules_after(code) == []


def test_refreshing_completer_is_a_lazy_attribute() -> None:
    code = """
import sail_lite.tinker as t
from tinker_cookbook.completers import TokenCompleter
assert issubclass(t.RefreshingSailCompleter, TokenCompleter)
assert 'RefreshingSailCompleter' in t.__all__
"""
    assert "tinker_cookbook" in _modules_after(code)


def test_public_names_resolve() -> None:
    import sail_lite.tinker as t

    missing = [name for name in t.__all__ if name != "RefreshingSailCompleter" and not hasattr(t, name)]
    assert missing == []
