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
            declared[node.name] = {n.name for n in node.body if isinstance(n, ast.FunctionDef) and not n.name.startswith("_")}
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


def test_dir_lists_the_public_names_lazy_ones_included():
    shown = {name for name in dir(sail_lite) if not (name.startswith("__") and name.endswith("__"))}
    assert shown == set(sail_lite.__all__) - {"__version__"}
    assert {"SailTokenCompleter", "OpenAICompatibleTokenCompleter", "resolve_tinker_checkpoint"} <= shown
    assert not {"TYPE_CHECKING", "annotations", "errors", "_core"} & shown
    # Listing them does not load them: the completer (and tinker-cookbook) stay unimported.
    out = run_python("import sail_lite, sys; dir(sail_lite); print('sail_lite.completer' in sys.modules)")
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr


def test_engine_error_kinds_map_one_to_one_onto_classes():
    stub = pathlib.Path(sail_lite.__file__).with_name("_core.pyi").read_text()
    kinds_line = next(line for line in stub.splitlines() if line.startswith("_ErrorKind = Literal["))
    kinds = set(ast.literal_eval(kinds_line.split("Literal", 1)[1]))
    classes = sail_lite.errors.ENGINE_ERROR_CLASSES
    assert set(classes) == kinds
    assert len(set(classes.values())) == len(classes), "two kinds share a class"
    for cls in classes.values():
        for attribute in ("status", "code", "error_type", "response_id", "attempts"):
            assert attribute in sail_lite.SailEngineError.__annotations__
        err = cls("m")
        assert all(hasattr(err, a) for a in ("status", "code", "error_type", "response_id", "attempts"))
