"""The ``sail-lite`` command line, run as a subprocess: sampling from an in-process emulator and
from a ``sail-lite serve`` emulator over loopback, clean shutdown on SIGTERM/SIGINT, and one-line
errors with the right exit status."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

import sail_lite
from sail_lite.emulator import Emulator

# Each CLI run imports tinker-cookbook (and torch) for sampling: seconds on a busy machine.
RUN_TIMEOUT = 120
EMULATOR_KEY = "sk-sail-lite-local"


def cli_env(**overrides: str) -> dict[str, str]:
    """The environment without any Sail settings of the machine running the tests."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SAIL_API_", "SAIL_LITE_"))}
    env.update(overrides)
    return env


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = RUN_TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sail_lite", *args],
        env=cli_env() if env is None else env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], exit_code: int, *needles: str) -> str:
    assert proc.returncode == exit_code, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("sail-lite: error: "), lines[0]
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


class Served:
    """A ``python -m sail_lite serve`` subprocess on an ephemeral port."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sail_lite", "serve", "--port", "0", *args],
            env=cli_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        first = self.proc.stdout.readline()  # type: ignore[union-attr]
        match = re.fullmatch(r"sail-lite emulator listening on (http://127\.0\.0\.1:\d+)\n", first)
        if match is None:
            self.proc.kill()
            raise AssertionError(f"unexpected first line {first!r}; stderr: {self.proc.stderr.read()}")  # type: ignore[union-attr]
        self.base_url = match.group(1)
        # The rest of the banner, up to the stop hint (read here: communicate() skips buffered lines).
        self.banner = [first]
        while not self.banner[-1].startswith("Press Ctrl-C") and self.banner[-1]:
            self.banner.append(self.proc.stdout.readline())  # type: ignore[union-attr]

    def stats(self) -> dict:
        with urllib.request.urlopen(f"{self.base_url}/_stats", timeout=10) as response:
            return json.load(response)

    def stop(self, sig: int = signal.SIGTERM) -> tuple[int, str, str]:
        self.proc.send_signal(sig)
        out, err = self.proc.communicate(timeout=30)
        return self.proc.returncode, out, err

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate(timeout=30)


@pytest.fixture
def served():
    servers: list[Served] = []

    def start(*args: str) -> Served:
        servers.append(Served(*args))
        return servers[-1]

    yield start
    for server in servers:
        server.kill()


# --- version and help -----------------------------------------------------------------------


def test_version():
    proc = run_cli("--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"sail-lite {sail_lite.__version__}"


@pytest.mark.parametrize(
    ("command", "expected_options"),
    [
        ((), ["demo", "sample", "serve", "--version"]),
        (("demo",), ["--groups", "--group-size", "--window", "--concurrency", "--no-lora"]),
        (("sample",), ["--model", "--prompt-tokens", "--text", "--max-tokens", "--window", "--base-url", "--emulator", "--json"]),
        (("serve",), ["--host", "--port", "--api-key", "--latency-scale", "--fault-429", "--fault-503", "--fault-drop"]),
    ],
)
def test_help_everywhere(command, expected_options):
    proc = run_cli(*command, "--help")
    assert proc.returncode == 0, proc.stderr
    for option in expected_options:
        assert option in proc.stdout


def test_console_script_is_installed():
    script = Path(sys.executable).with_name("sail-lite")
    assert script.exists(), "make build installs the sail-lite console script"
    proc = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("sail-lite ")


# --- usage errors: one line, exit 2 ---------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (("frobnicate",), ["invalid choice", "'frobnicate'"]),
        (("sample",), ["--prompt-tokens", "--text", "required"]),
        (("sample", "--text", "hi", "--prompt-tokens", "1,2"), ["not allowed with"]),
        (("sample", "--text", "hi", "--max-tokens", "0"), ["--max-tokens", "positive integer", "'0'"]),
        (("sample", "--prompt-tokens", "1,x,3"), ["--prompt-tokens", "'1,x,3'"]),
        (("sample", "--text", "hi", "--temperature", "hot"), ["--temperature"]),
        (("sample", "--text", "hi", "--emulator", "--base-url", "http://127.0.0.1:1"), ["not allowed with"]),
        (("serve", "--port", "70000"), ["--port", "0..65535"]),
        (("serve", "--fault-429", "1.5"), ["--fault-429", "probability"]),
        (("demo", "--groups", "-1"), ["--groups"]),
        (("demo", "--window", "asap"), ["scheduled window", "--no-lora"]),
        (("sample", "--text", ""), ["prompt is empty"]),
    ],
)
def test_bad_arguments_are_one_line_usage_errors(args, needles):
    proc = run_cli(*args)
    assert_one_line_error(proc, 2, *needles)
    assert proc.stdout == ""


def test_sample_without_key_or_base_url_says_what_is_needed():
    proc = run_cli("sample", "--text", "hello")
    line = assert_one_line_error(proc, 2, "SAIL_API_KEY", "--emulator")
    assert "Traceback" not in line


def test_sample_with_base_url_but_no_key_asks_for_the_key():
    proc = run_cli("sample", "--text", "hello", "--base-url", "http://127.0.0.1:9")
    assert_one_line_error(proc, 2, "SAIL_API_KEY", "--api-key", "http://127.0.0.1:9")


def test_serve_rejects_fault_rates_summing_over_one():
    proc = run_cli("serve", "--port", "0", "--fault-429", "0.7", "--fault-503", "0.6")
    assert_one_line_error(proc, 2, "rate_429", "<= 1")
    assert proc.stdout == ""


def test_bad_sample_value_checked_by_the_completer_is_a_usage_error():
    proc = run_cli("sample", "--emulator", "--text", "hi", "--temperature", "3")
    assert_one_line_error(proc, 2, "temperature")


# --- runtime errors: one line, exit 1 -------------------------------------------------------


def test_serve_on_a_busy_port_is_a_runtime_error():
    with Emulator() as emulator:
        proc = run_cli("serve", "--port", str(emulator.port))
    assert_one_line_error(proc, 1, "Address already in use", str(emulator.port))


def test_sample_with_a_wrong_key_fails_with_the_server_error():
    with Emulator(latency=0) as emulator:
        env = cli_env(SAIL_API_KEY="sk-wrong", SAIL_API_URL=emulator.base_url)
        proc = run_cli("sample", "--text", "hello", env=env)
        stats = emulator.stats()
    assert_one_line_error(proc, 1, "401")
    assert stats["by_status"].get("401", 0) >= 1  # it reached the server


def test_demo_without_tinker_cookbook_says_how_to_install_it(tmp_path):
    # A package that shadows tinker_cookbook and fails to import, as if it were not installed.
    shadow = tmp_path / "tinker_cookbook"
    shadow.mkdir()
    (shadow / "__init__.py").write_text("raise ImportError('No module named tinker_cookbook (hidden by the test)')\n")
    env = cli_env(PYTHONPATH=str(tmp_path))
    proc = run_cli("demo", env=env)
    assert_one_line_error(proc, 1, "tinker-cookbook", "pip install 'sail-lite[tinker]'")
    assert proc.stdout.splitlines() == ["loading tinker-cookbook..."]


# --- sampling --------------------------------------------------------------------------------


def check_sample_json(stdout: str, max_tokens: int) -> dict:
    report = json.loads(stdout)
    assert set(report) >= {"model", "window", "tokens", "logprobs", "stop_reason", "latency_seconds"}
    assert 0 <= len(report["tokens"]) <= max_tokens
    assert all(isinstance(t, int) and 0 <= t <= 256 for t in report["tokens"])
    assert len(report["logprobs"]) == len(report["tokens"])
    assert all(lp <= 0.0 for lp in report["logprobs"])
    assert report["stop_reason"] in ("stop", "length")
    if report["stop_reason"] == "length":
        assert len(report["tokens"]) == max_tokens
    return report


def test_sample_from_an_in_process_emulator_as_json():
    proc = run_cli("sample", "--emulator", "--text", "Q: What is 2 + 5?\nA:", "--max-tokens", "6", "--json")
    assert proc.returncode == 0, proc.stderr
    report = check_sample_json(proc.stdout, 6)
    assert report["model"] == "moonshotai/Kimi-K2.6"
    assert report["text"] == bytes(t for t in report["tokens"] if t < 256).decode(errors="replace")


def test_sample_prints_a_readable_table():
    proc = run_cli("sample", "--emulator", "--prompt-tokens", "84,104,101", "--max-tokens", "5", "--window", "standard")
    assert proc.returncode == 0, proc.stderr
    rows = dict(re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in proc.stdout.strip().splitlines())
    assert rows["window"] == "standard"
    tokens = rows["tokens"].split()
    assert 1 <= len(tokens) <= 5
    assert len(rows["logprobs"].split()) == len(tokens)
    assert rows["stop reason"] in ("stop", "length")
    assert "text" not in rows  # only shown for --text prompts


def test_serve_then_sample_against_it_then_sigterm(served):
    server = served("--latency-scale", "0.05")
    env = cli_env(SAIL_API_KEY=EMULATOR_KEY)
    proc = run_cli("sample", "--base-url", server.base_url, "--text", "The weather", "--max-tokens", "4", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    check_sample_json(proc.stdout, 4)
    stats = server.stats()
    assert stats["creates"] == 1
    assert stats["duplicate_samples"] == 0

    code, out, err = server.stop(signal.SIGTERM)
    assert code == 0, err
    assert "SIGTERM: emulator stopped after" in out
    assert f"  export SAIL_API_URL={server.base_url}\n" in server.banner
    assert f"  export SAIL_API_KEY={EMULATOR_KEY}\n" in server.banner
    assert "Traceback" not in err
    with pytest.raises(OSError):  # the port is closed
        urllib.request.urlopen(f"{server.base_url}/_stats", timeout=5)


def test_serve_maps_flags_onto_the_emulator(served):
    # Every create is answered 429 (Retry-After 10 ms): the sample retries, then gives up.
    server = served("--api-key", "sk-custom", "--fault-429", "1", "--retry-after", "0.01", "--fault-apply-to", "create")
    env = cli_env(SAIL_API_KEY="sk-custom", SAIL_API_URL=server.base_url)
    proc = run_cli("sample", "--text", "hi", "--max-tokens", "2", env=env)
    assert_one_line_error(proc, 1, "429")
    stats = server.stats()
    assert stats["faults"]["429"] >= 2  # retried
    assert stats["by_status"]["429"] == stats["faults"]["429"]
    assert stats["by_status"].get("202", 0) == 0
    code, out, _ = server.stop(signal.SIGINT)
    assert code == 0
    assert "SIGINT: emulator stopped after" in out


def test_serve_with_a_custom_key_and_sample_with_it(served):
    server = served("--api-key", "sk-custom")
    env = cli_env(SAIL_API_KEY="sk-custom", SAIL_API_URL=server.base_url)
    proc = run_cli("sample", "--text", "hi", "--max-tokens", "3", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    check_sample_json(proc.stdout, 3)
    assert server.stats()["by_status"].get("401", 0) == 0


def test_demo_runs_end_to_end_and_prints_the_summary():
    proc = run_cli("demo", "--groups", "2", "--group-size", "3", "--latency-scale", "0", "--fault-rate", "0", timeout=180)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith("loading tinker-cookbook...\n")
    assert re.search(r"emulator on http://127\.0\.0\.1:\d+", out)
    assert re.search(r"\[#+\]\s+6/6 rollouts", out)  # not a TTY: plain progress lines
    for label in ("samples", "tokens", "samples/s", "tokens/s", "latency p50", "latency p99", "retries"):
        assert re.search(rf"^  {re.escape(label)}\s+\S", out, re.M), label
    assert re.search(r"^  rollouts\s+6\s", out, re.M)
    assert re.search(r"^\s+0  base ", out, re.M) and re.search(r"^\s+1  lora ", out, re.M)
    assert re.search(r"^  retries\s+0\s", out, re.M)  # no faults injected
