"""Cold start and footprint: `python -c "import X"` wall time, wheel and installed sizes, and
required dependencies, for sail-lite and the peers, all in the bench environment."""

from __future__ import annotations

import importlib.metadata as md
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement

# import name -> distribution name
PACKAGES = {"sail_lite": "sail-lite", "sail": "sail", "openai": "openai", "aiohttp": "aiohttp"}
IMPORT_RUNS = 9


def _median_wall(code: str, runs: int = IMPORT_RUNS) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def installed_bytes(dist: str) -> int:
    total = 0
    for f in md.distribution(dist).files or []:
        path = Path(f.locate())
        if path.is_file():
            total += path.stat().st_size
    return total


def required_dependencies(dist: str) -> list[str]:
    """Direct requirements that apply on this interpreter without extras."""
    needed = []
    for spec in md.requires(dist) or []:
        req = Requirement(spec)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            needed.append(req.name)
    return needed


def wheel_bytes(dist: str, version: str, local_wheel: Path | None) -> int | None:
    """The local wheel's size, or the registry wheel's (pip's cache makes this a no-op)."""
    if local_wheel is not None:
        return local_wheel.stat().st_size
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary", ":all:",
             f"{dist}=={version}", "-d", tmp], capture_output=True,
        )
        wheels = list(Path(tmp).glob("*.whl"))
        return wheels[0].stat().st_size if proc.returncode == 0 and wheels else None


def _median_import_seconds(module: str, runs: int = IMPORT_RUNS) -> float:
    """The import alone, timed inside a fresh interpreter (the interpreter's own start, ~20 ms,
    varies more between runs than a small package's import takes)."""
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    times = [float(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout)
             for _ in range(runs)]
    return statistics.median(times)


def measure(sail_lite_wheel: Path | None, runs: int = IMPORT_RUNS) -> dict[str, Any]:
    interpreter = _median_wall("pass", runs)
    packages = {}
    for module, dist in PACKAGES.items():
        version = md.version(dist)
        packages[module] = {
            "distribution": dist,
            "version": version,
            "import_wall_ms": _median_wall(f"import {module}", runs) * 1e3,
            "import_ms": _median_import_seconds(module, runs) * 1e3,
            "wheel_bytes": wheel_bytes(dist, version, sail_lite_wheel if module == "sail_lite" else None),
            "installed_bytes": installed_bytes(dist),
            "required_dependencies": required_dependencies(dist),
        }
    return {"interpreter_startup_ms": interpreter * 1e3, "packages": packages}
