"""The emulator's own capacity on loopback: its Rust load generator (`sail-loadgen`, no Python
anywhere) driving the same create + poll loop against an emulator in another process."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from emulator_process import EmulatorProcess
from scenarios import fixed_latency

ROOT = Path(__file__).resolve().parent.parent
BINARY = ROOT / "target" / "release" / "sail-loadgen"


def measure(python: str, quick: bool = False) -> dict[str, Any]:
    if not BINARY.exists():
        return {"reason": f"{BINARY.relative_to(ROOT)} not built"}
    help_text = subprocess.run([str(BINARY), "--help"], capture_output=True, text=True).stdout
    if not help_text.strip():
        return {"reason": "sail-loadgen has no command-line interface yet"}
    return {"reason": "sail-loadgen's interface is not wired into the harness yet"}
