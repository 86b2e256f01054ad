"""The emulator in its own process: `python serve_emulator.py '<Emulator kwargs as JSON>'`.

Prints one JSON line (base_url, api_key, pid) once it is listening, then serves until its
standard input closes (the orchestrator closes it; a dead orchestrator closes it too)."""

from __future__ import annotations

import json
import os
import sys

import probes
from sail_lite.emulator import Emulator


def main() -> None:
    config = json.loads(sys.argv[1])
    probes.raise_fd_limit()
    with Emulator(**config) as emulator:
        print(json.dumps({"base_url": emulator.base_url, "api_key": emulator.api_key, "pid": os.getpid()}), flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    main()
