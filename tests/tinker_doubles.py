"""Test doubles for the remote Tinker service, which cannot run here.

- :class:`TinkerServiceDouble`: a local stdlib HTTP server (ThreadingHTTPServer on 127.0.0.1,
  ephemeral port, in a thread) speaking the few REST routes the real ``tinker.RestClient`` (0.38)
  uses for checkpoint TTLs and signed URLs, so the real client can be driven against it.
- :class:`CheckpointStoreDouble` + :class:`Tinker038RestClientDouble` /
  :class:`Tinker020RestClientDouble` / :class:`Tinker030RestClientDouble`: in-process doubles that
  mimic the RestClient *method surface* of each tinker release (read from that release's source),
  for what the real 0.38 client cannot show (older releases' archive-URL methods) and for
  deterministic refresh tests.
- :class:`FakeInnerCompleter`: a stand-in for ``sail_lite.SailTokenCompleter`` recording the
  signed URL it was built with.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import json
import threading
import time
import warnings
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any
from urllib.parse import unquote, urlsplit

API_KEY = "tml-test-key-DO-NOT-LEAK-0123456789"
SECRET_MARK = "SECRETSIG"  # every signed URL the doubles hand out carries this in its query


@dataclass
class RecordedRequest:
    method: str
    path: str
    body: Any
    api_key: str | None


class TinkerServiceDouble:
    """Test double for the remote Tinker service, which cannot run here.

    A ThreadingHTTPServer on 127.0.0.1 (ephemeral port, served from a daemon thread) implementing
    just what ``tinker.RestClient`` 0.38 sends for checkpoint TTLs and signed URLs:

    - ``POST /api/v1/client/config``          -> ``{"pjwt_auth_enabled": false}`` (plain API-key auth)
    - ``POST /api/v1/client/dynamic_config``  -> ``{}``
    - ``POST /api/v1/telemetry``              -> ``{}``
    - ``PUT  /api/v1/training_runs/{run}/checkpoints/{segment}/{id}/ttl``
      body ``{"ttl_seconds": int | null}`` -> 200, empty body (400 out of 3600..10 y, 404 unknown)
    - ``GET  /api/v1/training_runs/{run}/checkpoints/external_weights/{name}/external_weights_urls``
      -> ``{"urls": {"adapter_model.safetensors": url, "adapter_config.json": url}, "expires": ISO-8601}``
    - ``GET  /api/v1/training_runs/{run}/checkpoints/{segment}/{id}/archive`` (older releases)
      -> ``{"url": url, "expires": ISO-8601}``

    Every request must carry ``X-API-Key: <API_KEY>`` (401 otherwise).
    """

    def __init__(self, *, api_key: str = API_KEY, url_lifetime_seconds: float = 600.0) -> None:
        self.api_key = api_key
        self.url_lifetime_seconds = url_lifetime_seconds
        self.checkpoints: set[tuple[str, str]] = set()  # (run id, "<segment>/<id>")
        self.ttls: dict[tuple[str, str], int | None] = {}
        self.requests: list[RecordedRequest] = []
        self.error_override: tuple[int, Any] | None = None  # (status, json body) for checkpoint routes
        self.url_counter = 0
        self._lock = threading.Lock()
        double = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def do_GET(self) -> None:
                double._handle(self, "GET")

            def do_POST(self) -> None:
                double._handle(self, "POST")

            def do_PUT(self) -> None:
                double._handle(self, "PUT")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> TinkerServiceDouble:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def add_checkpoint(self, tinker_path: str) -> None:
        run, segment, cid = tinker_path[len("tinker://") :].split("/")
        self.checkpoints.add((run, f"{segment}/{cid}"))

    def reset(self) -> None:
        with self._lock:
            self.checkpoints.clear()
            self.ttls.clear()
            self.requests.clear()
            self.error_override = None

    def checkpoint_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.startswith("/api/v1/training_runs/")]

    # -- request handling -----------------------------------------------------------------------

    def _signed_url(self, run: str, checkpoint_id: str, filename: str) -> str:
        with self._lock:
            self.url_counter += 1
            n = self.url_counter
        return (
            f"https://storage.example.test/tinker/{run}/{checkpoint_id}/{filename}"
            f"?X-Goog-Signature={SECRET_MARK}{n}&X-Goog-Expires=600"
        )

    def _expires_iso(self) -> str:
        expires = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=self.url_lifetime_seconds)
        return expires.isoformat().replace("+00:00", "Z")

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        length = int(h.headers.get("content-length") or 0)
        raw = h.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        path = urlsplit(h.path).path
        with self._lock:
            self.requests.append(RecordedRequest(method, unquote(path), body, h.headers.get("x-api-key")))
        if h.headers.get("x-api-key") != self.api_key:
            return self._send(h, 401, {"detail": "Invalid API key"})
        if method == "POST" and path == "/api/v1/client/config":
            return self._send(h, 200, {"pjwt_auth_enabled": False})
        if method == "POST" and path in ("/api/v1/client/dynamic_config", "/api/v1/telemetry"):
            return self._send(h, 200, {})
        prefix = "/api/v1/training_runs/"
        if not path.startswith(prefix) or "/checkpoints/" not in path:
            return self._send(h, 404, {"detail": f"no route {method} {path}"})
        run, rest = path[len(prefix) :].split("/checkpoints/", 1)
        run = unquote(run)
        parts = [unquote(p) for p in rest.split("/")]
        if len(parts) != 3:
            return self._send(h, 404, {"detail": "bad checkpoint route"})
        segment, cid, action = parts
        key = (run, f"{segment}/{cid}")
        if self.error_override is not None:
            status, payload = self.error_override
            return self._send(h, status, payload)
        if key not in self.checkpoints:
            return self._send(h, 404, {"detail": "Checkpoint not found"})
        if method == "PUT" and action == "ttl":
            ttl = body.get("ttl_seconds") if isinstance(body, dict) else "missing"
            if ttl is not None and (not isinstance(ttl, int) or not 3600 <= ttl <= 10 * 365 * 86400):
                return self._send(h, 400, {"detail": "ttl_seconds out of range"})
            self.ttls[key] = ttl
            return self._send(h, 200, None)
        if method == "GET" and action == "external_weights_urls":
            if segment != "external_weights":
                return self._send(h, 400, {"detail": "not an external weights checkpoint"})
            return self._send(
                h,
                200,
                {
                    "urls": {
                        "adapter_model.safetensors": self._signed_url(run, key[1], "adapter_model.safetensors"),
                        "adapter_config.json": self._signed_url(run, key[1], "adapter_config.json"),
                    },
                    "expires": self._expires_iso(),
                },
            )
        if method == "GET" and action == "archive":
            return self._send(
                h, 200, {"url": self._signed_url(run, key[1], "archive.tar"), "expires": self._expires_iso()}
            )
        return self._send(h, 404, {"detail": f"no route {method} {path}"})

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, status: int, payload: Any) -> None:
        data = b"" if payload is None else json.dumps(payload).encode()
        h.send_response(status)
        h.send_header("content-type", "application/json")
        h.send_header("content-length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)


# ---------------------------------------------------------------------------------------------
# Method-surface doubles, one per tinker release
# ---------------------------------------------------------------------------------------------


@dataclass
class CheckpointStoreDouble:
    """Test double for the remote Tinker service, which cannot run here: the checkpoint state the
    RestClient method-surface doubles read and write, with an injectable clock."""

    clock: Callable[[], float] = time.time
    url_lifetime_seconds: float | None = 600.0  # None: report no expiry
    checkpoints: set[str] = field(default_factory=set)
    ttls: dict[str, int | None] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)  # (method name, tinker path)
    deprecated_calls: list[str] = field(default_factory=list)
    sync_calls_in_async_context: list[str] = field(default_factory=list)
    url_counter: int = 0
    delay_seconds: float = 0.0  # simulated network latency of URL lookups
    fail_with: BaseException | None = None  # raised by URL lookups

    def signed_url(self, tinker_path: str, filename: str) -> str:
        self.url_counter += 1
        tail = tinker_path[len("tinker://") :]
        return f"https://storage.example.test/{tail}/{filename}?sig={SECRET_MARK}{self.url_counter}"

    def expires(self) -> dt.datetime | None:
        if self.url_lifetime_seconds is None:
            return None
        return dt.datetime.fromtimestamp(self.clock() + self.url_lifetime_seconds, dt.UTC)

    def check(self, name: str, tinker_path: str) -> None:
        self.calls.append((name, tinker_path))
        if tinker_path not in self.checkpoints:
            raise NotFoundErrorDouble(f"Error code: 404 - {{'detail': 'Checkpoint not found: {tinker_path}'}}")

    def url_calls(self) -> list[str]:
        return [name for name, _ in self.calls if "url" in name]


class NotFoundErrorDouble(Exception):
    """Mimics ``tinker.NotFoundError`` (an ``APIStatusError`` with ``status_code``)."""

    status_code = 404


def _deprecated(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Mark like ``typing_extensions.deprecated(..., category=FutureWarning)`` does (sets
    ``__deprecated__``; warns when called) and record the call."""

    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        self.store.deprecated_calls.append(fn.__name__)
        warnings.warn(f"DEPRECATED: {fn.__name__}", FutureWarning, stacklevel=2)
        return fn(self, *args, **kwargs)

    wrapper.__name__ = fn.__name__
    wrapper.__deprecated__ = f"DEPRECATED: {fn.__name__}"  # type: ignore[attr-defined]
    return wrapper


class APIFutureDouble:
    """Mimics tinker 0.38's ``APIFuture``: awaitable, and ``.result()`` for sync callers."""

    def __init__(self, coro_fn: Callable[[], Any]) -> None:
        self._coro_fn = coro_fn

    def __await__(self) -> Generator[Any, None, Any]:
        return self._coro_fn().__await__()

    def result(self, timeout: float | None = None) -> Any:
        return asyncio.run(self._coro_fn())


class Tinker038RestClientDouble:
    """Test double for the remote Tinker service, which cannot run here: mimics tinker 0.38's
    ``RestClient`` surface: ``set_checkpoint_ttl_from_tinker_path`` and
    ``get_external_weights_urls`` return awaitable ``APIFuture``s; their ``_async`` twins exist
    but are deprecated (FutureWarning); there is no archive-URL method."""

    def __init__(self, store: CheckpointStoreDouble) -> None:
        self.store = store

    def set_checkpoint_ttl_from_tinker_path(self, tinker_path: str, ttl_seconds: int | None) -> APIFutureDouble:
        async def run() -> None:
            self.store.check("set_checkpoint_ttl_from_tinker_path", tinker_path)
            self.store.ttls[tinker_path] = ttl_seconds

        return APIFutureDouble(run)

    @_deprecated
    async def set_checkpoint_ttl_from_tinker_path_async(self, tinker_path: str, ttl_seconds: int | None) -> None:
        await self.set_checkpoint_ttl_from_tinker_path(tinker_path, ttl_seconds)

    def get_external_weights_urls(self, tinker_path: str) -> APIFutureDouble:
        if "/external_weights/" not in tinker_path:
            raise ValueError(
                "get_external_weights_urls only accepts external weights checkpoints "
                f"(tinker://<training_run_id>/external_weights/<name>), got {tinker_path!r}"
            )

        async def run() -> Any:
            if self.store.delay_seconds:
                await asyncio.sleep(self.store.delay_seconds)
            self.store.check("get_external_weights_urls", tinker_path)
            if self.store.fail_with is not None:
                raise self.store.fail_with
            # ExternalWeightsUrlsResponse(urls: dict[str, str], expires: datetime)
            return SimpleNamespace(
                urls={
                    "adapter_model.safetensors": self.store.signed_url(tinker_path, "adapter_model.safetensors"),
                    "adapter_config.json": self.store.signed_url(tinker_path, "adapter_config.json"),
                },
                expires=self.store.expires(),
            )

        return APIFutureDouble(run)

    @_deprecated
    async def get_external_weights_urls_async(self, tinker_path: str) -> Any:
        return await self.get_external_weights_urls(tinker_path)


def _sync_only(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Mimics older tinker's ``@sync_only``: records (the real one logs a warning) a call made
    from a running event loop."""

    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            asyncio.get_running_loop()
            self.store.sync_calls_in_async_context.append(fn.__name__)
        except RuntimeError:
            pass
        return fn(self, *args, **kwargs)

    wrapper.__name__ = fn.__name__
    return wrapper


def _done_future(fn: Callable[[], Any]) -> concurrent.futures.Future[Any]:
    fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
    try:
        fut.set_result(fn())
    except BaseException as exc:  # noqa: BLE001
        fut.set_exception(exc)
    return fut


class Tinker020RestClientDouble:
    """Test double for the remote Tinker service, which cannot run here: mimics tinker 0.20's
    ``RestClient`` surface: sync-only methods returning ``concurrent.futures.Future``, with
    ``_async`` coroutine twins (not deprecated); ``get_checkpoint_archive_url_from_tinker_path``
    returns ``CheckpointArchiveUrlResponse(url: str, expires: datetime)``; no
    ``get_external_weights_urls``."""

    def __init__(self, store: CheckpointStoreDouble) -> None:
        self.store = store

    def _ttl(self, tinker_path: str, ttl_seconds: int | None) -> None:
        self.store.check("set_checkpoint_ttl_from_tinker_path", tinker_path)
        self.store.ttls[tinker_path] = ttl_seconds

    def _archive(self, tinker_path: str) -> Any:
        self.store.check("get_checkpoint_archive_url_from_tinker_path", tinker_path)
        if self.store.fail_with is not None:
            raise self.store.fail_with
        return SimpleNamespace(url=self.store.signed_url(tinker_path, "archive.tar"), expires=self.store.expires())

    @_sync_only
    def set_checkpoint_ttl_from_tinker_path(
        self, tinker_path: str, ttl_seconds: int | None
    ) -> concurrent.futures.Future[None]:
        return _done_future(lambda: self._ttl(tinker_path, ttl_seconds))

    async def set_checkpoint_ttl_from_tinker_path_async(self, tinker_path: str, ttl_seconds: int | None) -> None:
        self._ttl(tinker_path, ttl_seconds)

    @_sync_only
    def get_checkpoint_archive_url_from_tinker_path(self, tinker_path: str) -> concurrent.futures.Future[Any]:
        return _done_future(lambda: self._archive(tinker_path))

    async def get_checkpoint_archive_url_from_tinker_path_async(self, tinker_path: str) -> Any:
        if self.store.delay_seconds:
            await asyncio.sleep(self.store.delay_seconds)
        return self._archive(tinker_path)


class Tinker030RestClientDouble(Tinker020RestClientDouble):
    """Test double for the remote Tinker service, which cannot run here: mimics tinker 0.30, which
    had both the archive-URL methods and (sync-only + ``_async``) ``get_external_weights_urls``."""

    def _external(self, tinker_path: str) -> Any:
        self.store.check("get_external_weights_urls", tinker_path)
        return SimpleNamespace(
            urls={"adapter_model.safetensors": self.store.signed_url(tinker_path, "adapter_model.safetensors")},
            expires=self.store.expires(),
        )

    @_sync_only
    def get_external_weights_urls(self, tinker_path: str) -> concurrent.futures.Future[Any]:
        return _done_future(lambda: self._external(tinker_path))

    async def get_external_weights_urls_async(self, tinker_path: str) -> Any:
        return self._external(tinker_path)


class ServiceClientDouble:
    """Test double for the remote Tinker service, which cannot run here: an older
    ``tinker.ServiceClient`` whose ``create_rest_client()`` hands out a RestClient."""

    def __init__(self, rest_client: Any) -> None:
        self._rest = rest_client
        self.created = 0

    def create_rest_client(self) -> Any:
        self.created += 1
        return self._rest


class FakeClock:
    """A settable epoch-seconds clock."""

    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeInnerCompleter:
    """Stands in for ``sail_lite.SailTokenCompleter``: built with its keyword arguments, it
    records them and every call, and answers with a token list. ``expired_urls`` (a class-level
    set) makes calls with those URLs fail like a server reporting an expired signed URL."""

    instances: list[FakeInnerCompleter] = []
    expired_urls: set[str] = set()

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.calls: list[tuple[Any, Any, int | None]] = []
        FakeInnerCompleter.instances.append(self)

    @property
    def url(self) -> str:
        return self.kwargs["tinker_lora_signed_url"]

    async def __call__(self, model_input: Any, stop: Any, *, max_tokens: int | None = None) -> Any:
        self.calls.append((model_input, stop, max_tokens))
        await asyncio.sleep(0)
        if self.url in FakeInnerCompleter.expired_urls:
            raise ServerErrorDouble(
                "response resp_1 failed: could not download LoRA: the signed URL has expired",
                code="lora_download_failed",
            )
        return {"tokens": [1, 2, 3], "url": self.url, "max_tokens": max_tokens}

    @classmethod
    def reset(cls) -> None:
        cls.instances = []
        cls.expired_urls = set()


class ServerErrorDouble(Exception):
    """Shaped like a ``sail_lite.errors.SailResponseFailedError``: ``message`` and ``code``."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
