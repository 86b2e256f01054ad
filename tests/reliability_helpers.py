"""Shared pieces of the reliability, bad-input and security tests.

- completer factories and prompts that make every sample's correct answer checkable;
- loopback test doubles: a server that accepts and never replies, and a scripted HTTP(S)
  server that answers each request from a Python function (used where the emulator cannot
  misbehave in the way a test needs: malformed bodies, redirects, TLS);
- resource probes: OS threads, socket fds, connections to a given port;
- child-process runners (interpreter exit, fork) and a worker entry point for spawn pools;
- an optional outcome log that RELIABILITY.md's table is built from.

Nothing here talks to anything but 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

MODEL = "sail-lite/byte-ngram"
# A fixed sampling seed (sent as metadata) makes the emulator's answer a pure function of the
# prompt, so a sample served through faults can be compared with a fault-free reference.
SEED_METADATA = {"seed": "20261122"}


# --- completers and prompts ---------------------------------------------------------------


def sail_completer(emu: Any = None, *, base_url: str | None = None, api_key: str | None = None, **overrides: Any):
    """A SailTokenCompleter on the byte model, pointed at ``emu`` (or ``base_url``)."""
    import sail_lite

    config: dict[str, Any] = {"model": MODEL, "max_tokens": 8}
    config.update(overrides)
    return sail_lite.SailTokenCompleter(
        base_url=base_url if base_url is not None else emu.base_url,
        api_key=api_key if api_key is not None else (emu.api_key if emu is not None else "sk-test"),
        **config,
    )


def prompt_for(i: int) -> list[int]:
    """A distinct byte prompt per sample, so a mixed-up answer cannot go unnoticed."""
    return list(f"sample {i}: ".encode())


def as_tuple(sample: Any) -> tuple[tuple[int, ...], tuple[float, ...] | None, str]:
    """A TokensWithLogprobs as a comparable value."""
    logprobs = None if sample.maybe_logprobs is None else tuple(sample.maybe_logprobs)
    return tuple(sample.tokens), logprobs, sample.stop_reason


async def reference_samples(completer: Any, prompts: Iterable[list[int]], concurrency: int = 1000) -> list[Any]:
    """Sample every prompt (no faults expected); raises on any error."""
    return await gather_bounded([lambda p=p: completer(p) for p in prompts], concurrency, return_exceptions=False)


async def gather_bounded(calls: list[Callable[[], Any]], concurrency: int, *, return_exceptions: bool = True) -> list[Any]:
    """Run ``calls`` with at most ``concurrency`` awaiting at once (an RL batch, not 20,000
    coroutines created up front); results in call order."""
    gate = asyncio.Semaphore(concurrency)

    async def one(call: Callable[[], Any]) -> Any:
        async with gate:
            return await call()

    return await asyncio.gather(*(one(c) for c in calls), return_exceptions=return_exceptions)


LOOP_KINDS = ["asyncio", "uvloop"]


def run_on(loop_kind: str, coro: Any) -> Any:
    """``asyncio.run`` on the default loop or on uvloop."""
    if loop_kind == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(coro)
    return asyncio.run(coro)


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.02) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` passes; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return predicate()
        time.sleep(interval)


async def async_wait_until(predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return predicate()
        await asyncio.sleep(interval)
    return True


# --- resource probes ---------------------------------------------------------------------


def os_thread_count() -> int:
    """Every OS thread of this process (tokio's included, which threading.enumerate misses)."""
    return len(os.listdir("/proc/self/task"))


def socket_inodes() -> set[int]:
    """Inodes of the sockets this process has open."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed while listing
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def _tcp_table() -> dict[int, tuple[int, int]]:
    """inode -> (local port, remote port) for every TCP socket on the machine."""
    table = {}
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            local_port = int(cols[1].rsplit(":", 1)[1], 16)
            remote_port = int(cols[2].rsplit(":", 1)[1], 16)
            table[int(cols[9])] = (local_port, remote_port)
    return table


def connections_to(port: int) -> int:
    """How many of this process's sockets are client connections to ``port``."""
    table = _tcp_table()
    return sum(1 for inode in socket_inodes() if table.get(inode, (0, 0))[1] == port)


def listening_addresses(port: int) -> list[str]:
    """Local addresses (hex, as /proc shows them) of sockets listening on ``port``."""
    found = []
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(name).read_text().splitlines()[1:]:
            cols = line.split()
            address, local_port = cols[1].rsplit(":", 1)
            if int(local_port, 16) == port and cols[3] == "0A":  # 0A = LISTEN
                found.append(address)
    return found


# --- loopback test doubles ----------------------------------------------------------------


class SilentServer:
    """A TCP server that accepts connections and never answers (a hung upstream).

    Connections are held open until :meth:`close`, so clients see neither a reply nor EOF.
    """

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=1024)
        self.port = self._listener.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, name="silent-server", daemon=True)
        self._thread.start()

    @property
    def accepted(self) -> int:
        return len(self._held)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:  # closed
                return
            self._held.append(conn)

    def close(self) -> None:
        try:  # wakes the thread blocked in accept() (closing alone does not, on Linux)
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        for conn in self._held:
            conn.close()
        self._thread.join(timeout=5)

    def __enter__(self) -> SilentServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Reply:
    status: int
    body: bytes = b""
    content_type: str | None = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, payload: Any, **kw: Any) -> Reply:
        return cls(status, json.dumps(payload).encode(), **kw)


class _QuietHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.open_connections: set[socket.socket] = set()
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        self.open_connections.add(request)
        super().process_request(request, client_address)

    def close_connections(self) -> None:
        """Hang up on every client, as a stopped server does: keep-alive connections (and the
        handler threads blocked on them) must not outlive the test that made them."""
        for conn in list(self.open_connections):
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.open_connections.clear()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (timeout, cancel) leaves a broken pipe behind: expected here.
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class ScriptedServer:
    """A loopback HTTP/1.1 server whose every answer comes from ``respond(request)``.

    A test double for a misbehaving Sail (or a proxy in front of it): it serves exactly the
    bytes a test asks for. ``ssl_context`` makes it HTTPS. Requests are recorded in order.
    """

    def __init__(self, respond: Callable[[Request], Reply], ssl_context: Any = None) -> None:
        self.respond = respond
        self.requests: list[Request] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep test output quiet
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                request = Request(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                server.requests.append(request)
                reply = server.respond(request)
                self.send_response(reply.status)
                if reply.content_type is not None:
                    self.send_header("Content-Type", reply.content_type)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

            do_GET = do_POST = do_DELETE = do_PUT = _serve

        self._httpd = _QuietHTTPServer(("127.0.0.1", 0), Handler)
        if ssl_context is not None:
            self._httpd.socket = ssl_context.wrap_socket(self._httpd.socket, server_side=True)
        self.port = self._httpd.server_address[1]
        scheme = "https" if ssl_context is not None else "http"
        self.base_url = f"{scheme}://127.0.0.1:{self.port}"
        # A short poll interval keeps close() quick.
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), name="scripted-server", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._httpd.close_connections()
        self._thread.join(timeout=5)

    def __enter__(self) -> ScriptedServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- Sail protocol bodies -----------------------------------------------------------------


def queued_body(response_id: str) -> dict[str, Any]:
    return {"id": response_id, "object": "response", "status": "queued"}


def completed_body(response_id: str, tokens: list[int], logprobs: list[float] | None, stop_reason: str | None = "stop") -> dict[str, Any]:
    block: dict[str, Any] = {"type": "output_text", "text": "", "token_ids": tokens}
    if logprobs is not None:
        block["logprobs"] = [{"token_id": t, "logprob": lp} for t, lp in zip(tokens, logprobs)]
    if stop_reason is not None:
        block["stop_reason"] = stop_reason
    return {
        "id": response_id,
        "object": "response",
        "status": "completed",
        "output": [{"type": "message", "content": [block]}],
        "error": None,
        "incomplete_details": None,
    }


def sail_script(poll_bodies: Callable[[str, int], Reply], poll_after_ms: int | None = None) -> Callable[[Request], Reply]:
    """A ``respond`` function speaking Sail's protocol: creates answer 202 with a fresh id,
    polls answer ``poll_bodies(response_id, poll_number)``, cancels answer 200.
    ``poll_after_ms``: creates carry that poll-after hint (``retry-after-ms``), so the first poll
    does not wait where a cold poll plan would put it."""
    create_headers = {} if poll_after_ms is None else {"retry-after-ms": str(poll_after_ms)}
    counter = iter(range(1, 1 << 62))
    polls: dict[str, int] = {}
    lock = threading.Lock()

    def respond(request: Request) -> Reply:
        path = request.path.split("?")[0]
        if request.method == "POST" and path == "/v1/responses":
            return Reply.json(202, queued_body(f"resp_{next(counter)}"), headers=create_headers)
        if request.method == "POST" and path.endswith("/cancel"):
            return Reply.json(200, {"id": path.split("/")[3], "status": "cancelled"})
        if request.method == "GET" and path.startswith("/v1/responses/"):
            response_id = path.rsplit("/", 1)[1]
            with lock:
                polls[response_id] = polls.get(response_id, 0) + 1
                number = polls[response_id]
            return poll_bodies(response_id, number)
        return Reply.json(404, {"error": {"message": "unknown endpoint", "type": "invalid_request_error", "code": "unknown_url"}})

    return respond


# --- TLS material -------------------------------------------------------------------------


@dataclass
class TlsFiles:
    ca: Path  # the CA certificate (what ca_bundle= should point at)
    cert: Path  # the server's leaf certificate, for 127.0.0.1, signed by the CA
    key: Path


def make_tls_files(directory: Path) -> TlsFiles:
    """A throwaway CA and a 127.0.0.1 server certificate it signed (openssl CLI).

    A CA plus a leaf, because rustls (correctly) refuses a self-signed CA certificate used as
    the server's own certificate."""
    d = Path(directory)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=sail-lite test CA",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign",
            "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"))
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
            "-keyout", str(d / "server.key"), "-out", str(d / "server.csr"))
    (d / "server.ext").write_text("basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", str(d / "server.csr"), "-CA", str(d / "ca.pem"), "-CAkey", str(d / "ca.key"),
            "-CAcreateserial", "-days", "2", "-extfile", str(d / "server.ext"), "-out", str(d / "server.pem"))
    return TlsFiles(ca=d / "ca.pem", cert=d / "server.pem", key=d / "server.key")


# --- child processes ----------------------------------------------------------------------


def run_python(code: str, *args: str, timeout: float, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter of this venv; output captured as text."""
    child_env = dict(os.environ, PYTHONFAULTHANDLER="1", **(env or {}))
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout, env=child_env)


def run_python_many(code: str, args: list[str], runs: int, parallel: int, timeout: float) -> list[subprocess.CompletedProcess[str]]:
    """``runs`` copies of ``code``, ``parallel`` at a time (each pays the torch import)."""
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        return list(pool.map(lambda _: run_python(code, *args, timeout=timeout), range(runs)))


def rollout_groups_in_worker(completer: Any, builders: list[Any], alarm_seconds: int = 120) -> list[dict[str, Any]]:
    """Spawn-pool entry point: run tinker-cookbook group rollouts with an unpickled completer
    in the worker's own event loop; return plain, picklable summaries. A hang ends the worker
    by SIGALRM (the pool then reports it broken) instead of hanging the test."""
    import signal

    from tinker_cookbook.rl.rollouts import do_group_rollout

    signal.alarm(alarm_seconds)

    async def run() -> list[Any]:
        return await asyncio.gather(*(do_group_rollout(b, completer) for b in builders))

    summaries = []
    for group in asyncio.run(run()):
        summaries.append(
            {
                "pid": os.getpid(),
                "trajectories": len(group.trajectories_G),
                "turns": [len(t.transitions) for t in group.trajectories_G],
                "logprobs_match": all(len(tr.ac.logprobs) == len(tr.ac.tokens) for t in group.trajectories_G for tr in t.transitions),
                "rewards": group.get_total_rewards(),
            }
        )
    signal.alarm(0)
    return summaries


# --- measured outcomes --------------------------------------------------------------------


def record_outcome(scenario: str, **numbers: Any) -> None:
    """Append one scenario's measured numbers to ``$SAIL_LITE_RELIABILITY_LOG`` (JSON lines),
    when set; RELIABILITY.md's table is written from this log. Always echoed to stdout."""
    line = json.dumps({"scenario": scenario, **numbers}, sort_keys=True)
    print(f"[reliability] {line}")
    path = os.environ.get("SAIL_LITE_RELIABILITY_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
