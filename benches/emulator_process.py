"""Start serve_emulator.py (or another server script speaking the same start-up line, such as
slow_sail_server.py) in its own process and stop it again (close its stdin)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


class EmulatorProcess:
    def __init__(self, python: str, config: dict, script: str = "serve_emulator.py") -> None:
        self._proc = subprocess.Popen(
            [python, str(HERE / script), json.dumps(config)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=sys.stderr, text=True, cwd=HERE,
        )
        line = self._proc.stdout.readline()
        if not line:
            self._proc.wait(timeout=10)
            raise RuntimeError(f"the emulator did not start (exit code {self._proc.returncode})")
        ready = json.loads(line)
        self.base_url: str = ready["base_url"]
        self.api_key: str = ready["api_key"]
        self.pid: int = ready["pid"]

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.stdin.close()
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    def __enter__(self) -> "EmulatorProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
