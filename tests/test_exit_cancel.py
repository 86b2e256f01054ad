"""Exit without orphans, with real processes against the emulator in this process: a child
with 1,000 unscoped samples in flight that gets SIGTERM or Ctrl-C (SIGINT) exits and leaves
every one of them cancelled on the server; a scoped child leaves its samples running (for a
rerun to re-attach to); a SIGTERM handler the user installed is left alone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from reliability_helpers import wait_until
from sail_lite.emulator import Emulator

CHILD = str(Path(__file__).with_name("scope_child.py"))
HANG_GUARD = 120  # seconds: only so a hang fails the test; never a speed bound
N = 1000
# The exit hook's wait is 2 s by default; a loaded 2-core CI machine gets more room here so
# the test checks that every cancel is sent, not how fast.
ENV = dict(os.environ, SAIL_LITE_EXIT_CANCEL_SECONDS="30")


def start(emu: Emulator, tmp_path: Path, script: str = CHILD, **config) -> subprocess.Popen[str]:
    config = {"base_url": emu.base_url, "api_key": emu.api_key, "out": str(tmp_path / "out.json"), "n": N, "group": 1, **config}
    return subprocess.Popen([sys.executable, script, json.dumps(config)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)


def wait_all_created(emu: Emulator, child: subprocess.Popen[str]) -> None:
    assert wait_until(lambda: emu.stats()["in_flight"] >= N or child.poll() is not None, timeout=HANG_GUARD)
    assert child.poll() is None, child.communicate()[1][-3000:]


@pytest.mark.timeout(600)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "ctrl-c"])
def test_unscoped_samples_are_cancelled_on_the_server_at_exit(tmp_path, sig):
    # Samples would run ~100 s: only a cancel ends them while the test looks.
    with Emulator(latency={"scale": 100.0}) as emu:
        child = start(emu, tmp_path)
        wait_all_created(emu, child)
        child.send_signal(sig)
        _, stderr = child.communicate(timeout=HANG_GUARD)
        # SIGTERM: still dies by SIGTERM. Ctrl-C: KeyboardInterrupt ends it (Python reports SIGINT).
        assert child.returncode in ((-signal.SIGTERM,) if sig == signal.SIGTERM else (-signal.SIGINT, 1, 130)), stderr[-3000:]
        assert "Fatal Python error" not in stderr and "panicked" not in stderr, stderr[-3000:]
        # Everything was sent before the process ended (no waiting needed, but a little slack).
        assert wait_until(lambda: emu.stats()["in_flight"] == 0, timeout=10), emu.stats()
        stats = emu.stats()
        assert stats["cancels_effective"] == N and stats["creates"] == N


@pytest.mark.timeout(600)
def test_scoped_samples_are_left_running_at_exit(tmp_path):
    with Emulator(latency={"scale": 100.0}) as emu:
        child = start(emu, tmp_path, scope="left-running")
        wait_all_created(emu, child)
        child.send_signal(signal.SIGTERM)
        _, stderr = child.communicate(timeout=HANG_GUARD)
        assert child.returncode == -signal.SIGTERM, stderr[-3000:]
        stats = emu.stats()
        assert stats["cancels_received"] == 0 and stats["in_flight"] == N


USER_HANDLER = r"""
import asyncio, json, signal, sys
import sail_lite
config = json.loads(sys.argv[1])
def mine(signum, frame):
    print("user handler ran", flush=True)
    sys.exit(7)
signal.signal(signal.SIGTERM, mine)
completer = sail_lite.SailTokenCompleter(model="sail-lite/byte-ngram", max_tokens=8, base_url=config["base_url"], api_key=config["api_key"])
async def main():
    await asyncio.gather(*(completer([1, 2, i % 200]) for i in range(config["n"])))
asyncio.run(main())
"""


@pytest.mark.timeout(600)
def test_a_user_sigterm_handler_is_kept_and_exit_still_cancels(tmp_path):
    script = tmp_path / "user_handler.py"
    script.write_text(USER_HANDLER)
    with Emulator(latency={"scale": 100.0}) as emu:
        child = start(emu, tmp_path, script=str(script))
        wait_all_created(emu, child)
        child.send_signal(signal.SIGTERM)
        stdout, stderr = child.communicate(timeout=HANG_GUARD)
        assert "user handler ran" in stdout and child.returncode == 7, stderr[-3000:]
        # The user's sys.exit is a normal exit: the atexit hook cancelled everything.
        assert wait_until(lambda: emu.stats()["in_flight"] == 0, timeout=10), emu.stats()
        assert emu.stats()["cancels_effective"] == N
