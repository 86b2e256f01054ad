"""The package itself: `import sail_lite` stays light, the extension's stubs match it, and the
completer explains what to install when tinker-cookbook is missing."""

from __future__ import annotations

import ast
import json
import pathlib
import subprocess
import sys

import sail_lite
import sail_lite._core as core

HEAVY = ("tinker", "tinker_cookbook", "torch", "openai", "typing", "asyncio")


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_import_sail_lite_loads_nothing_heavy():
    out = run_python(f"import sail_lite, sys, json; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == []


def test_stub_matches_the_extension():
    stub_path = pathlib.Path(sail_lite.__file__).with_name("_core.pyi")
    tree = ast.parse(stub_path.read_text())
    declared: dict[str, set[str] | None] = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            declared[node.name] = {n.name for n in node.body if isinstance(n, ast.FunctionDef) and n.name != "__init__"}
        elif isinstance(node, ast.FunctionDef):
            declared[node.name] = None
    public = {name for name in dir(core) if not name.startswith("_")}
    assert public == set(declared), "stub and extension disagree on top-level names"
    for name, members in declared.items():
        if members is not None:
            runtime = {m for m in dir(getattr(core, name)) if not m.startswith("_")}
            assert runtime == members, f"{name}: stub {sorted(members)} vs runtime {sorted(runtime)}"
    assert (stub_path.parent / "py.typed").exists()


def test_without_tinker_cookbook_the_completer_says_how_to_install_it():
    # Make tinker_cookbook unimportable in a child process (a None entry blocks the import).
    code = (
        "import sys; sys.modules['tinker_cookbook'] = None\n"
        "import sail_lite\n"
        "try:\n"
        "    sail_lite.SailTokenCompleter(model='m', max_tokens=4, api_key='k')\n"
        "except sail_lite.MissingDependencyError as e:\n"
        "    print('MISSING', e)\n"
    )
    out = run_python(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("MISSING") and "pip install" in out.stdout and "tinker" in out.stdout


def test_version_and_error_hierarchy():
    assert sail_lite.__version__ == core.__version__
    for cls in (sail_lite.SailArgumentError, sail_lite.SailAPIStatusError, sail_lite.SailTimeoutError,
                sail_lite.SailConnectionError, sail_lite.SailResponseFailedError, sail_lite.ProtocolError):
        assert issubclass(cls, sail_lite.SailError)
    assert issubclass(sail_lite.SailArgumentError, ValueError)
    assert issubclass(sail_lite.SailTimeoutError, TimeoutError)
    assert issubclass(sail_lite.SailConnectionError, ConnectionError)
