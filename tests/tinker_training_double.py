"""A loopback HTTP test double of the remote Tinker *training* service, which cannot run here.

:class:`TinkerTrainingDouble` is a stdlib ``ThreadingHTTPServer`` on 127.0.0.1 (ephemeral port,
served from a daemon thread) speaking the routes the real ``tinker`` 0.38 SDK uses for a training
run (read off the SDK's ``resources/``, ``lib/internal_client_holder.py``, ``lib/api_future_impl.py``
and ``lib/public_interfaces/``), so ``tinker.ServiceClient`` / ``TrainingClient`` / ``RestClient``
and ``tinker_cookbook.rl.train.main`` run against it unchanged (``base_url=double.base_url``,
``api_key=API_KEY``). It also serves the exported LoRA files behind the signed URLs it hands out.

It does no learning: forward_backward echoes the datum's sampler logprobs (so the train/sample KL
is 0) and every checkpoint's LoRA is a small deterministic safetensors file. It records what it
receives, so tests can assert on it:

- ``requests``: every HTTP request (method, path, decoded body, API key), in arrival order;
- ``forward_backward_calls``: each forward_backward, with each Datum's tokens and loss inputs;
- ``optim_steps``, ``checkpoints`` (by tinker path), ``sampling_sessions``, ``downloads``;
- ``sample_requests``: any ``/api/v1/asample``. Sampling is never served here: such a request is
  recorded and answered with ``sampler_failure_status`` (400 by default: the SDK retries 5xx for up
  to 5 minutes, a 400 fails the caller at once with the message below).

The request/response schemas come from the SDK itself (pydantic types; its protobuf module for
forward_backward, which 0.38 sends and expects as ``application/x-protobuf``).

``arithmetic_train_config`` + ``run_rl_train`` run the real ``tinker_cookbook.rl.train.main``
offline against the double (byte tokenizer registered under the model name, pricing download
skipped, the demo's arithmetic env as data). What one sync step sends (seen with sampling
patched to export weights; ``(x)`` = retrieve_future polls):

    client/config, client/dynamic_config, create_session, create_model (x), get_info,
    [per step] save_weights_for_sampler with no name (x) -> a sampling session id  -- or, on
    save_every steps, save_weights + save_weights_for_sampler named "%06d" (x) and
    create_sampling_client(sampler path) -- then rollouts (asample), forward_backward,
    optim_step (x); after the last step one more sampler, then save_weights + save_weights_for_sampler
    "final" (ttl None), sessions/<id>/finish, telemetry.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import json
import random
import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import numpy as np
from tinker.proto import tinker_public_pb2 as pb

from sail_lite.demo.lora_archive import adapter_config, safetensors_bytes

from tinker_doubles import API_KEY, SECRET_MARK

__all__ = [
    "API_KEY",
    "SECRET_MARK",
    "DEFAULT_BASE_MODEL",
    "SAMPLING_REFUSED",
    "RecordedRequest",
    "RecordedDatum",
    "ForwardBackwardCall",
    "CheckpointRecord",
    "TrainingRunRecord",
    "LoraFiles",
    "default_lora_files",
    "TinkerTrainingDouble",
]

DEFAULT_BASE_MODEL = "sail-lite/byte-model"
SAMPLING_REFUSED = "sampling is not served by the Tinker training double"
_PROTO = "application/x-protobuf"
_KIND_TO_TYPE = {"weights": "training", "sampler_weights": "sampler", "external_weights": "external"}
_TEN_YEARS = 10 * 365 * 86400


@dataclass
class RecordedRequest:
    method: str
    path: str  # percent-decoded, without the query
    body: Any  # JSON body, the decoded protobuf (as a dict) for forward_backward, or None
    api_key: str | None
    query: dict[str, list[str]] = field(default_factory=dict)
    status: int | None = None  # the status the double answered with


@dataclass
class RecordedDatum:
    """One ``tinker.Datum`` as forward_backward received it."""

    tokens: list[int]  # model_input, all text chunks concatenated
    loss_fn_inputs: dict[str, list[float] | list[int]]  # flat values per input name
    shapes: dict[str, list[int]]

    def get(self, name: str) -> list[Any]:
        return self.loss_fn_inputs[name]


@dataclass
class ForwardBackwardCall:
    model_id: str
    seq_id: int
    loss_fn: str
    loss_fn_config: dict[str, float]
    forward_only: bool
    data: list[RecordedDatum]
    compressed: bool = False  # sent with Content-Encoding: zstd


@dataclass
class CheckpointRecord:
    tinker_path: str
    run_id: str
    kind: str  # "weights" | "sampler_weights" | "external_weights"
    name: str
    index: int  # 0, 1, 2... in save order across the double
    optim_steps_before: int  # how many optim_steps the run had when this was saved
    created: dt.datetime
    ttl_seconds: int | None
    files: dict[str, bytes] = field(default_factory=dict)  # external_weights only
    deleted: bool = False

    @property
    def checkpoint_id(self) -> str:
        return f"{self.kind}/{self.name}"


@dataclass
class TrainingRunRecord:
    model_id: str
    session_id: str
    base_model: str
    lora_rank: int | None
    lora_config: dict[str, Any] | None
    user_metadata: dict[str, Any] | None
    optim_steps: int = 0


LoraFiles = Callable[[CheckpointRecord, TrainingRunRecord], dict[str, bytes]]

HIDDEN_SIZE = 64


def default_lora_files(checkpoint: CheckpointRecord, run: TrainingRunRecord) -> dict[str, bytes]:
    """A real PEFT LoRA export: ``adapter_model.safetensors`` (F32 ``lora_A``/``lora_B`` for
    q_proj and v_proj, seeded by the checkpoint's index so each checkpoint differs) and
    ``adapter_config.json`` (rank and base model of the run), as ``sail_lite.demo.lora_archive``
    builds them."""
    rank = run.lora_rank or 8
    rng = random.Random(checkpoint.index)
    tensors = {}
    for module in ("q_proj", "v_proj"):
        prefix = f"base_model.model.model.layers.0.self_attn.{module}"
        tensors[f"{prefix}.lora_A.weight"] = (
            [rank, HIDDEN_SIZE],
            [rng.uniform(-0.125, 0.125) for _ in range(rank * HIDDEN_SIZE)],
        )
        tensors[f"{prefix}.lora_B.weight"] = (
            [HIDDEN_SIZE, rank],
            [rng.uniform(-0.05, 0.05) for _ in range(HIDDEN_SIZE * rank)],
        )
    config = json.dumps(adapter_config(rank, run.base_model), sort_keys=True).encode()
    return {"adapter_model.safetensors": safetensors_bytes(tensors), "adapter_config.json": config}


@dataclass
class _PendingFuture:
    result: Any  # JSON-able dict, or bytes (a serialized protobuf)
    polls_left: int


@dataclass
class _SignedFile:
    checkpoint: CheckpointRecord
    filename: str
    expires: dt.datetime


class _HangupServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer that hangs up on its clients when closed, so keep-alive
    connections (and the handler threads blocked on them) never outlive the test."""

    daemon_threads = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.open_connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self.open_connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self.open_connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections, self.open_connections = list(self.open_connections), set()
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _iso(t: dt.datetime | None) -> str | None:
    return None if t is None else t.isoformat().replace("+00:00", "Z")


class TinkerTrainingDouble:
    """Test double for the remote Tinker training service (tinker 0.38 wire protocol), which
    cannot run here. See the module docstring for what it records.

    Args:
        api_key: the key every ``/api/v1`` request must carry as ``X-API-Key`` (401 otherwise).
        base_models: the models ``get_server_capabilities`` lists (any name is accepted).
        pending_polls: how many ``try_again`` answers each future gets before its result, so the
            SDK's retrieve_future polling loop is exercised.
        url_lifetime_seconds: lifetime of the signed file URLs.
        lora_files: builds an external_weights checkpoint's files (default :func:`default_lora_files`).
        sampler_failure_status: the HTTP status ``/api/v1/asample`` answers with.
        client_config: flags added to the ``/api/v1/client/config`` answer (e.g.
            ``{"proto_compress_fwdbwd": True}`` makes the SDK zstd-compress forward_backward).
    """

    def __init__(
        self,
        *,
        api_key: str = API_KEY,
        base_models: tuple[str, ...] = (DEFAULT_BASE_MODEL,),
        pending_polls: int = 1,
        url_lifetime_seconds: float = 600.0,
        lora_files: LoraFiles = default_lora_files,
        sampler_failure_status: int = 400,
        client_config: dict[str, Any] | None = None,
    ) -> None:
        self.client_config = {"pjwt_auth_enabled": False, **(client_config or {})}
        self.api_key = api_key
        self.base_models = base_models
        self.pending_polls = pending_polls
        self.url_lifetime_seconds = url_lifetime_seconds
        self.lora_files = lora_files
        self.sampler_failure_status = sampler_failure_status
        # Recorded state (read these in tests; guarded by _lock while the server runs).
        self.requests: list[RecordedRequest] = []
        self.sessions: dict[str, dict[str, Any]] = {}
        self.finished_sessions: dict[str, Any] = {}
        self.training_runs: dict[str, TrainingRunRecord] = {}
        self.forward_backward_calls: list[ForwardBackwardCall] = []
        self.optim_steps: list[dict[str, Any]] = []
        self.checkpoints: dict[str, CheckpointRecord] = {}
        self.sampling_sessions: dict[str, dict[str, Any]] = {}
        self.sample_requests: list[RecordedRequest] = []
        self.downloads: list[tuple[str, str, int]] = []  # (tinker path, filename, status)
        self._futures: dict[str, _PendingFuture] = {}
        self._signed: dict[str, _SignedFile] = {}
        self._counter = itertools.count()
        self._checkpoint_index = itertools.count()
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

            def do_DELETE(self) -> None:
                double._handle(self, "DELETE")

        self._server = _HangupServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> TinkerTrainingDouble:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._server.close_connections()

    def __enter__(self) -> TinkerTrainingDouble:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading what was recorded ----------------------------------------------------------------

    def paths(self, method: str | None = None) -> list[str]:
        """The request paths in arrival order (``/api/v1/...``), optionally of one method."""
        with self._lock:
            return [r.path for r in self.requests if method is None or r.method == method]

    def errors(self) -> list[RecordedRequest]:
        """The requests the double answered with an HTTP error (refused samples included)."""
        with self._lock:
            return [r for r in self.requests if r.status is not None and r.status >= 400]

    def requests_to(self, path: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def checkpoints_of_kind(self, kind: str) -> list[CheckpointRecord]:
        with self._lock:
            return [c for c in self.checkpoints.values() if c.kind == kind]

    def datums(self) -> list[RecordedDatum]:
        """Every Datum forward_backward received, in order."""
        with self._lock:
            return [d for call in self.forward_backward_calls for d in call.data]

    # -- request handling -----------------------------------------------------------------------

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        length = int(h.headers.get("content-length") or 0)
        raw = h.rfile.read(length) if length else b""
        split = urlsplit(h.path)
        path = unquote(split.path)
        query = parse_qs(split.query)
        if path.startswith("/storage/"):
            return self._serve_file(h, path, query)
        body: Any
        compressed = h.headers.get("content-encoding") == "zstd"
        if method == "POST" and path == "/api/v1/forward_backward":
            if compressed:
                import zstandard

                raw = zstandard.ZstdDecompressor().decompress(raw)
            msg = pb.ForwardBackwardRequest()
            msg.ParseFromString(raw)
            body = msg
        else:
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode("utf-8", "replace")
        recorded = RecordedRequest(method, path, body, h.headers.get("x-api-key"), query)
        with self._lock:
            self.requests.append(recorded)
        if h.headers.get("x-api-key") != self.api_key:
            recorded.status = 401
            return self._send(h, 401, {"detail": "Invalid API key"})
        try:
            status, payload = self._route(method, path, body, recorded, compressed)
        except _HttpError as exc:
            status, payload = exc.status, {"detail": exc.detail}
        recorded.status = status
        if isinstance(payload, bytes):
            return self._send_bytes(h, status, payload, _PROTO)
        return self._send(h, status, payload)

    def _route(
        self, method: str, path: str, body: Any, recorded: RecordedRequest, compressed: bool
    ) -> tuple[int, Any]:
        key = (method, path)
        simple = {
            ("POST", "/api/v1/client/config"): lambda: self.client_config,
            ("POST", "/api/v1/client/dynamic_config"): lambda: {},
            ("POST", "/api/v1/telemetry"): lambda: {"status": "accepted"},
            ("GET", "/api/v1/healthz"): lambda: {"status": "ok"},
            ("GET", "/api/v1/get_server_capabilities"): self._capabilities,
            ("POST", "/api/v1/create_session"): lambda: self._create_session(body),
            ("POST", "/api/v1/session_heartbeat"): lambda: {"type": "session_heartbeat"},
            ("POST", "/api/v1/create_model"): lambda: self._create_model(body),
            ("POST", "/api/v1/get_info"): lambda: self._get_info(body),
            ("POST", "/api/v1/forward_backward"): lambda: self._forward_backward(body, compressed),
            ("POST", "/api/v1/optim_step"): lambda: self._optim_step(body),
            ("POST", "/api/v1/save_weights"): lambda: self._save(body, "weights"),
            ("POST", "/api/v1/save_weights_for_sampler"): lambda: self._save_for_sampler(body),
            ("POST", "/api/v1/save_weights_external"): lambda: self._save(body, "external_weights"),
            ("POST", "/api/v1/load_weights"): lambda: self._load_weights(body),
            ("POST", "/api/v1/create_sampling_session"): lambda: self._create_sampling_session(body),
            ("POST", "/api/v1/retrieve_future"): lambda: self._retrieve_future(body),
            ("POST", "/api/v1/retrieve_futures"): lambda: {"completions": [], "cursor": body.get("prev_cursor", 0)},
            ("POST", "/api/v1/cancel_future"): lambda: None,
            ("GET", "/api/v1/training_runs"): self._list_training_runs,
        }
        if key in simple:
            return 200, simple[key]()
        if path == "/api/v1/asample":
            with self._lock:
                self.sample_requests.append(recorded)
            return self.sampler_failure_status, {"detail": SAMPLING_REFUSED}
        parts = path.split("/")
        if method == "POST" and path.startswith("/api/v1/sessions/") and path.endswith("/finish"):
            with self._lock:
                self.finished_sessions[parts[4]] = body
            return 200, None
        if method == "GET" and path.startswith("/api/v1/samplers/"):
            return 200, self._get_sampler(path[len("/api/v1/samplers/") :])
        if path.startswith("/api/v1/training_runs/"):
            return self._training_run_route(method, path[len("/api/v1/training_runs/") :], body)
        raise _HttpError(404, f"no route {method} {path}")

    # -- sessions and models --------------------------------------------------------------------

    def _capabilities(self) -> dict[str, Any]:
        return {
            "supported_models": [
                {"model_name": m, "max_context_length": 32768, "trainable": True, "sampleable": True}
                for m in self.base_models
            ]
        }

    def _create_session(self, body: dict[str, Any]) -> dict[str, Any]:
        session_id = f"session-{uuid.uuid4()}"
        with self._lock:
            self.sessions[session_id] = body
        return {"type": "create_session", "session_id": session_id}

    def _run(self, model_id: str) -> TrainingRunRecord:
        run = self.training_runs.get(model_id)
        if run is None:
            raise _HttpError(404, f"unknown model_id {model_id!r}")
        return run

    def _create_model(self, body: dict[str, Any]) -> dict[str, Any]:
        model_id = f"{body['session_id']}:train:{body['model_seq_id']}"
        lora = body.get("lora_config")
        with self._lock:
            self.training_runs[model_id] = TrainingRunRecord(
                model_id=model_id,
                session_id=body["session_id"],
                base_model=body["base_model"],
                lora_rank=None if lora is None else lora["rank"],
                lora_config=lora,
                user_metadata=body.get("user_metadata"),
            )
        return self._future({"type": "create_model", "model_id": model_id}, model_id)

    def _get_info(self, body: dict[str, Any]) -> dict[str, Any]:
        run = self._run(body["model_id"])
        return {
            "type": "get_info",
            "model_id": run.model_id,
            "model_data": {"arch": "double", "model_name": run.base_model, "tokenizer_id": run.base_model},
            "is_lora": run.lora_rank is not None,
            "lora_rank": run.lora_rank,
            "model_name": run.base_model,
        }

    def _load_weights(self, body: dict[str, Any]) -> dict[str, Any]:
        path = body["path"]
        with self._lock:
            source = self.checkpoints.get(path)
        if source is None or source.kind != "weights":
            raise _HttpError(404, f"no training checkpoint {path!r}")
        model_id = body.get("model_id") or f"{body['session_id']}:train:{body['model_seq_id']}"
        with self._lock:
            if model_id not in self.training_runs:
                src_run = self.training_runs[source.run_id]
                self.training_runs[model_id] = dataclasses.replace(
                    src_run, model_id=model_id, session_id=body.get("session_id", src_run.session_id)
                )
        return self._future({"type": "load_weights", "path": path, "model_id": model_id}, model_id)

    # -- training -------------------------------------------------------------------------------

    def _forward_backward(self, msg: Any, compressed: bool) -> dict[str, Any]:
        run = self._run(msg.model_id)
        data = [_decode_datum(d) for d in msg.data]
        call = ForwardBackwardCall(
            model_id=msg.model_id,
            seq_id=msg.seq_id,
            loss_fn=msg.loss_fn,
            loss_fn_config=dict(msg.loss_fn_config),
            forward_only=msg.forward_only,
            data=data,
            compressed=compressed,
        )
        with self._lock:
            self.forward_backward_calls.append(call)
        return self._future(_forward_backward_output(data), run.model_id)

    def _optim_step(self, body: dict[str, Any]) -> dict[str, Any]:
        run = self._run(body["model_id"])
        with self._lock:
            run.optim_steps += 1
            self.optim_steps.append(body)
        return self._future({"metrics": {"optim_steps": float(run.optim_steps)}}, run.model_id)

    # -- checkpoints ----------------------------------------------------------------------------

    def _new_checkpoint(self, run: TrainingRunRecord, kind: str, name: str, ttl: int | None) -> CheckpointRecord:
        _check_ttl(ttl)
        with self._lock:
            record = CheckpointRecord(
                tinker_path=f"tinker://{run.model_id}/{kind}/{name}",
                run_id=run.model_id,
                kind=kind,
                name=name,
                index=next(self._checkpoint_index),
                optim_steps_before=run.optim_steps,
                created=_now(),
                ttl_seconds=ttl,
            )
        if kind == "external_weights":
            record.files = self.lora_files(record, run)
        with self._lock:
            self.checkpoints[record.tinker_path] = record
        return record

    def _save(self, body: dict[str, Any], kind: str) -> dict[str, Any]:
        run = self._run(body["model_id"])
        record = self._new_checkpoint(run, kind, body["path"], body.get("ttl_seconds"))
        result: dict[str, Any] = {"path": record.tinker_path}
        if kind == "external_weights":
            result["size_bytes"] = sum(len(b) for b in record.files.values())
            result["type"] = "save_weights_external"
        else:
            result["type"] = "save_weights"
        return self._future(result, run.model_id)

    def _save_for_sampler(self, body: dict[str, Any]) -> dict[str, Any]:
        run = self._run(body["model_id"])
        if body.get("path") is not None:
            record = self._new_checkpoint(run, "sampler_weights", body["path"], body.get("ttl_seconds"))
            return self._future({"type": "save_weights_for_sampler", "path": record.tinker_path}, run.model_id)
        # No name: an ephemeral snapshot served by a new sampling session.
        session_id = self._new_sampling_session(run.base_model, None, run.model_id, run.optim_steps)
        return self._future({"type": "save_weights_for_sampler", "sampling_session_id": session_id}, run.model_id)

    def _new_sampling_session(
        self, base_model: str, model_path: str | None, model_id: str | None, optim_steps: int | None
    ) -> str:
        with self._lock:
            session_id = f"sampling-{next(self._counter)}"
            self.sampling_sessions[session_id] = {
                "base_model": base_model,
                "model_path": model_path,
                "model_id": model_id,
                "optim_steps_before": optim_steps,
            }
        return session_id

    def _create_sampling_session(self, body: dict[str, Any]) -> dict[str, Any]:
        model_path = body.get("model_path")
        base_model = body.get("base_model")
        if model_path is not None:
            with self._lock:
                record = self.checkpoints.get(model_path)
            if record is None or record.kind != "sampler_weights":
                raise _HttpError(404, f"no sampler checkpoint {model_path!r}")
            base_model = self.training_runs[record.run_id].base_model
        if base_model is None:
            raise _HttpError(400, "base_model or model_path is required")
        session_id = self._new_sampling_session(base_model, model_path, None, None)
        return {"type": "create_sampling_session", "sampling_session_id": session_id}

    def _get_sampler(self, session_id: str) -> dict[str, Any]:
        with self._lock:
            info = self.sampling_sessions.get(session_id)
        if info is None:
            raise _HttpError(404, f"unknown sampler {session_id!r}")
        return {"sampler_id": session_id, "base_model": info["base_model"], "model_path": info["model_path"]}

    def _checkpoint_json(self, c: CheckpointRecord) -> dict[str, Any]:
        expires = None if c.ttl_seconds is None else c.created + dt.timedelta(seconds=c.ttl_seconds)
        return {
            "checkpoint_id": c.checkpoint_id,
            "checkpoint_type": _KIND_TO_TYPE[c.kind],
            "time": _iso(c.created),
            "tinker_path": c.tinker_path,
            "size_bytes": sum(len(b) for b in c.files.values()) or None,
            "expires_at": _iso(expires),
        }

    def _training_run_json(self, run: TrainingRunRecord) -> dict[str, Any]:
        with self._lock:
            mine = [c for c in self.checkpoints.values() if c.run_id == run.model_id and not c.deleted]
        last = {k: [c for c in mine if c.kind == k] for k in ("weights", "sampler_weights")}
        return {
            "training_run_id": run.model_id,
            "base_model": run.base_model,
            "model_owner": "double",
            "is_lora": run.lora_rank is not None,
            "lora_rank": run.lora_rank,
            "last_request_time": _iso(_now()),
            "last_checkpoint": self._checkpoint_json(last["weights"][-1]) if last["weights"] else None,
            "last_sampler_checkpoint": (
                self._checkpoint_json(last["sampler_weights"][-1]) if last["sampler_weights"] else None
            ),
            "user_metadata": run.user_metadata,
        }

    def _list_training_runs(self) -> dict[str, Any]:
        runs = [self._training_run_json(r) for r in list(self.training_runs.values())]
        return {"training_runs": runs, "cursor": {"offset": 0, "limit": len(runs), "total_count": len(runs)}}

    def _training_run_route(self, method: str, rest: str, body: Any) -> tuple[int, Any]:
        run_id, _, tail = rest.partition("/")
        run = self._run(run_id)
        if tail == "" and method == "GET":
            return 200, self._training_run_json(run)
        if tail == "checkpoints" and method == "GET":
            with self._lock:
                mine = [c for c in self.checkpoints.values() if c.run_id == run_id and not c.deleted]
            return 200, {"checkpoints": [self._checkpoint_json(c) for c in mine]}
        parts = tail.split("/")
        if len(parts) < 3 or parts[0] != "checkpoints":
            raise _HttpError(404, f"no route {method} {rest}")
        kind, name, action = parts[1], parts[2], "/".join(parts[3:])
        with self._lock:
            record = self.checkpoints.get(f"tinker://{run_id}/{kind}/{name}")
        if record is None or record.deleted:
            raise _HttpError(404, "Checkpoint not found")
        if method == "DELETE" and action == "":
            with self._lock:
                record.deleted = True
            return 200, None
        if method == "PUT" and action == "ttl":
            ttl = body.get("ttl_seconds") if isinstance(body, dict) else "missing"
            _check_ttl(ttl)
            with self._lock:
                record.ttl_seconds = ttl
            return 200, None
        if method == "GET" and action == "external_weights_urls":
            if kind != "external_weights":
                raise _HttpError(400, "not an external weights checkpoint")
            expires = _now() + dt.timedelta(seconds=self.url_lifetime_seconds)
            urls = {name_: self._sign(record, name_, expires) for name_ in record.files}
            return 200, {"urls": urls, "expires": _iso(expires)}
        raise _HttpError(404, f"no route {method} {rest}")

    # -- signed file URLs -------------------------------------------------------------------------

    def _sign(self, record: CheckpointRecord, filename: str, expires: dt.datetime) -> str:
        with self._lock:
            signature = f"{SECRET_MARK}{next(self._counter)}"
            self._signed[signature] = _SignedFile(record, filename, expires)
        return (
            f"{self.base_url}/storage/{quote(record.run_id, safe='')}/{record.name}/{filename}"
            f"?X-Goog-Expires={int(self.url_lifetime_seconds)}&X-Goog-Signature={signature}"
        )

    def _serve_file(self, h: BaseHTTPRequestHandler, path: str, query: dict[str, list[str]]) -> None:
        signature = (query.get("X-Goog-Signature") or [""])[0]
        with self._lock:
            signed = self._signed.get(signature)
        filename = path.rsplit("/", 1)[-1]
        if signed is None or signed.filename != filename:
            status, data = 403, b"<Error><Code>SignatureDoesNotMatch</Code></Error>"
        elif _now() > signed.expires:
            status, data = 400, b"<Error><Code>ExpiredToken</Code></Error>"
        elif signed.checkpoint.deleted:
            status, data = 404, b"<Error><Code>NoSuchKey</Code></Error>"
        else:
            status, data = 200, signed.checkpoint.files[filename]
        with self._lock:
            self.downloads.append((signed.checkpoint.tinker_path if signed else "", filename, status))
        self._send_bytes(h, status, data, "application/octet-stream" if status == 200 else "application/xml")

    # -- futures --------------------------------------------------------------------------------

    def _future(self, result: Any, model_id: str | None) -> dict[str, Any]:
        with self._lock:
            request_id = f"req-{next(self._counter)}"
            self._futures[request_id] = _PendingFuture(result, self.pending_polls)
        return {"request_id": request_id, "model_id": model_id}

    def _retrieve_future(self, body: dict[str, Any]) -> Any:
        with self._lock:
            pending = self._futures.get(body["request_id"])
            if pending is None:
                raise _HttpError(404, f"unknown request_id {body['request_id']!r}")
            if pending.polls_left > 0:
                pending.polls_left -= 1
                return {"type": "try_again", "request_id": body["request_id"], "queue_state": "active"}
        return pending.result

    # -- wire helpers ---------------------------------------------------------------------------

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, status: int, payload: Any) -> None:
        data = b"" if payload is None else json.dumps(payload).encode()
        TinkerTrainingDouble._send_bytes(h, status, data, "application/json")

    @staticmethod
    def _send_bytes(h: BaseHTTPRequestHandler, status: int, data: bytes, content_type: str) -> None:
        h.send_response(status)
        h.send_header("content-type", content_type)
        h.send_header("content-length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)


class _HttpError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def _check_ttl(ttl: Any) -> None:
    if ttl is not None and (not isinstance(ttl, int) or not 3600 <= ttl <= _TEN_YEARS):
        raise _HttpError(400, "ttl_seconds must be between 3600 and 10 years, or null")


_NP_DTYPES = {pb.DTYPE_FLOAT32: np.float32, pb.DTYPE_INT64: np.int64, pb.DTYPE_INT32: np.int32}


def _decode_datum(d: Any) -> RecordedDatum:
    tokens: list[int] = []
    for chunk in d.model_input:
        if chunk.WhichOneof(chunk.DESCRIPTOR.oneofs[0].name) != "encoded_text":
            raise _HttpError(400, "the double accepts text chunks only")
        tokens.extend(np.frombuffer(chunk.encoded_text.tokens, dtype=np.int32).tolist())
    inputs: dict[str, Any] = {}
    shapes: dict[str, list[int]] = {}
    for name, tensor in d.loss_fn_inputs.items():
        if tensor.HasField("sparse_csr"):
            raise _HttpError(400, f"sparse loss_fn_input {name!r} is not supported by the double")
        inputs[name] = np.frombuffer(tensor.dense, dtype=_NP_DTYPES[tensor.dtype]).tolist()
        shapes[name] = list(tensor.shape)
    return RecordedDatum(tokens=tokens, loss_fn_inputs=inputs, shapes=shapes)


def _batched(per_datum: list[np.ndarray], dtype: int) -> Any:
    bt = pb.BatchedTensor()
    bt.dtype = dtype
    offsets = [0]
    for arr in per_datum:
        offsets.append(offsets[-1] + arr.nbytes)
    bt.offsets = np.asarray(offsets, dtype=np.int64).tobytes()
    bt.data = b"".join(arr.tobytes() for arr in per_datum)
    return bt


def _forward_backward_output(data: list[RecordedDatum]) -> bytes:
    """A ForwardBackwardOutput protobuf: per datum, ``logprobs`` (the datum's own sampler
    logprobs when it has them, so the policy matches the sampler; else zeros) and
    ``elementwise_loss`` (-advantage x logprob), plus a ``loss:sum`` metric."""
    logprobs, losses = [], []
    for d in data:
        n = len(d.loss_fn_inputs.get("target_tokens", d.tokens))
        lp = np.asarray(d.loss_fn_inputs.get("logprobs", [0.0] * n), dtype=np.float32)
        adv = np.asarray(d.loss_fn_inputs.get("advantages", [0.0] * n), dtype=np.float32)
        logprobs.append(lp)
        losses.append((-adv * lp).astype(np.float32))
    out = pb.ForwardBackwardOutput()
    out.loss_fn_output_type = "ArrayRecord"
    out.metrics["loss:sum"] = float(sum(float(x.sum()) for x in losses))
    if data:
        record = out.loss_fn_outputs.add()
        record.num_datums = len(data)
        record.fields["logprobs"].CopyFrom(_batched(logprobs, pb.DTYPE_FLOAT32))
        record.fields["elementwise_loss"].CopyFrom(_batched(losses, pb.DTYPE_FLOAT32))
    return out.SerializeToString()


# ---------------------------------------------------------------------------------------------
# Running tinker_cookbook.rl.train.main against the double, offline
# ---------------------------------------------------------------------------------------------


def register_byte_tokenizer(model_name: str) -> None:
    from sail_lite.demo.toy_env import register_byte_tokenizer as register

    register(model_name)


def arithmetic_train_config(
    *,
    base_url: str,
    log_path: str,
    model_name: str = DEFAULT_BASE_MODEL,
    steps: int = 3,
    groups_per_batch: int = 2,
    group_size: int = 2,
    max_tokens: int = 8,
    lora_rank: int = 4,
    **overrides: Any,
) -> Any:
    """A ``tinker_cookbook.rl.train.Config`` training on the demo's arithmetic env
    (``sail_lite.demo.toy_env``) for ``steps`` steps, against the double at ``base_url``."""
    from tinker_cookbook.rl import train

    dataset_builder = _arithmetic_classes()[1](
        batches=steps, groups_per_batch=groups_per_batch, group_size=group_size
    )
    fields: dict[str, Any] = {
        "learning_rate": 1e-4,
        "dataset_builder": dataset_builder,
        "model_name": model_name,
        "recipe_name": "sail-lite-double",
        "max_tokens": max_tokens,
        "log_path": log_path,
        "lora_rank": lora_rank,
        "base_url": base_url,
        "eval_every": 0,
        "save_every": 0,
    }
    return train.Config(**{**fields, **overrides})


def run_rl_train(double: TinkerTrainingDouble, config: Any, *, rollout_executor: Any = None) -> None:
    """Run the real ``tinker_cookbook.rl.train.main(config)`` to completion against ``double``
    (``config.base_url`` must be ``double.base_url``), offline: the byte tokenizer is registered
    under ``config.model_name``, the cookbook's pricing download is skipped and the API key is
    the double's. Patch sampling (e.g. ``TrainingClient.save_weights_and_get_sampling_client``)
    before calling this, or the rollouts hit the double's refusing sampler."""
    import asyncio
    import os
    from unittest import mock

    from tinker_cookbook.rl import train

    register_byte_tokenizer(config.model_name)
    with (
        mock.patch.dict(os.environ, {"TINKER_API_KEY": double.api_key}),
        mock.patch.object(train, "fetch_model_pricing", lambda *a, **k: None),
    ):
        asyncio.run(train.main(config, rollout_executor=rollout_executor))


_ARITHMETIC_CLASSES: tuple[type, type] | None = None


def _arithmetic_classes() -> tuple[type, type]:
    global _ARITHMETIC_CLASSES
    if _ARITHMETIC_CLASSES is None:
        _ARITHMETIC_CLASSES = _build_arithmetic_classes()
    return _ARITHMETIC_CLASSES


def _build_arithmetic_classes() -> tuple[type, type]:
    import chz
    from tinker_cookbook.rl.types import RLDataset, RLDatasetBuilder

    from sail_lite.demo.toy_env import ArithmeticGroupBuilder, make_problems

    class ArithmeticDataset(RLDataset):
        def __init__(self, batches: int, groups_per_batch: int, group_size: int) -> None:
            self.groups_per_batch = groups_per_batch
            self.builders = [
                ArithmeticGroupBuilder(problem, group_size=group_size, max_turns=1)
                for problem in make_problems(batches * groups_per_batch, seed=0)
            ]

        def get_batch(self, index: int) -> list[Any]:
            start = index * self.groups_per_batch
            return self.builders[start : start + self.groups_per_batch]

        def __len__(self) -> int:
            return len(self.builders) // self.groups_per_batch

    @chz.chz
    class ArithmeticDatasetBuilder(RLDatasetBuilder):
        batches: int = 3
        groups_per_batch: int = 2
        group_size: int = 2

        async def __call__(self) -> tuple[RLDataset, RLDataset | None]:
            return ArithmeticDataset(self.batches, self.groups_per_batch, self.group_size), None

    return ArithmeticDataset, ArithmeticDatasetBuilder


def __getattr__(name: str) -> Any:
    # The cookbook classes import torch; build them only when asked for.
    if name in ("ArithmeticDataset", "ArithmeticDatasetBuilder"):
        dataset, builder = _arithmetic_classes()
        globals().update(ArithmeticDataset=dataset, ArithmeticDatasetBuilder=builder)
        return globals()[name]
    raise AttributeError(name)
