"""A local Sail server, in-process (Rust, axum on tokio), for tests, benchmarks and offline demos.

>>> from sail_lite.emulator import Emulator
>>> with Emulator(latency=0) as emu:              # doctest: +SKIP
...     os.environ["SAIL_API_URL"] = emu.base_url  # the API root, without /v1
...     os.environ["SAIL_API_KEY"] = emu.api_key

It speaks Sail's raw-token Responses protocol (``/v1/responses``, poll, cancel, ``/v1/models``),
OpenAI-compatible ``/v1/completions``, hosts Tinker-style signed checkpoint archives, and can inject
latency and faults (429, 5xx, dropped connections, slow answers, failed responses, expiry).
Counters: :meth:`Emulator.stats` (or ``GET /_stats``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = ["Emulator", "DEFAULT_API_KEY", "DEFAULT_MODELS", "DEFAULT_WINDOWS"]

DEFAULT_API_KEY = "sk-sail-lite-local"
DEFAULT_MODELS = ("moonshotai/Kimi-K2.6", "sail-lite/byte-ngram")
DEFAULT_WINDOWS = ("asap", "priority", "standard", "flex", "balanced")


def _latency(latency: Any) -> dict[str, Any] | None:
    """A number is a scale on the default per-window latencies (0 = instant)."""
    if latency is None:
        return None
    if isinstance(latency, bool):
        raise TypeError("latency must be a number (a scale) or a dict")
    if isinstance(latency, (int, float)):
        return {"scale": float(latency)}
    if isinstance(latency, Mapping):
        return dict(latency)
    raise TypeError("latency must be a number (a scale) or a dict")


class Emulator:
    """A running local Sail server. Starts on construction; use as a context manager or call
    :meth:`close`. ``port=0`` picks a free port.

    Keyword options map 1:1 onto the Rust ``EmulatorConfig`` (see the emulator docs); anything not
    named here can be passed through ``**config``.
    """

    def __init__(
        self,
        api_key: str = DEFAULT_API_KEY,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        models: list[str] | tuple[str, ...] | None = None,
        windows: list[str] | tuple[str, ...] | None = None,
        latency: float | Mapping[str, Any] | None = None,
        faults: Mapping[str, Any] | None = None,
        seed: int = 0,
        retention_seconds: float = 3600.0,
        request_log: str | None = None,
        loras: Mapping[str, Mapping[str, Any]] | None = None,
        worker_threads: int = 2,
        max_body_bytes: int | None = None,
        **config: Any,
    ) -> None:
        cfg: dict[str, Any] = {
            "api_key": api_key,
            "host": host,
            "port": int(port),
            "seed": int(seed),
            "retention_seconds": float(retention_seconds),
            "worker_threads": int(worker_threads),
        }
        if models is not None:
            cfg["models"] = list(models)
        if windows is not None:
            cfg["windows"] = list(windows)
        lat = _latency(latency)
        if lat is not None:
            cfg["latency"] = lat
        if faults is not None:
            cfg["faults"] = dict(faults)
        if request_log is not None:
            cfg["request_log"] = str(request_log)
        if loras is not None:
            cfg["loras"] = {k: dict(v) for k, v in loras.items()}
        if max_body_bytes is not None:
            cfg["max_body_bytes"] = int(max_body_bytes)
        cfg.update(config)

        from sail_lite._core import EmulatorServer  # deferred: keeps `import sail_lite.emulator` cheap

        self._api_key = api_key
        self._server = EmulatorServer(json.dumps(cfg))
        self._closed = False

    # -- addresses -------------------------------------------------------------------------
    @property
    def host(self) -> str:
        return self._server.host

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def base_url(self) -> str:
        """The API root without ``/v1`` (what ``SAIL_API_URL`` expects)."""
        return self._server.base_url

    @property
    def openai_base_url(self) -> str:
        """The OpenAI-compatible base URL (with ``/v1``)."""
        return self._server.base_url + "/v1"

    @property
    def api_key(self) -> str:
        return self._api_key

    # -- control ---------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = json.loads(self._server.stats_json())
        return stats

    def reset_stats(self) -> None:
        self._server.reset_stats()

    def update(
        self,
        *,
        latency: float | Mapping[str, Any] | None = None,
        faults: Mapping[str, Any] | bool | None = None,
        retention_seconds: float | None = None,
    ) -> None:
        """Change latency/faults/retention on the running server (merged into the current values).
        ``faults=False`` switches every fault off (back to the defaults)."""
        patch: dict[str, Any] = {}
        lat = _latency(latency)
        if lat is not None:
            patch["latency"] = lat
        if faults is False:
            patch["faults"] = None  # JSON merge patch: null resets to the defaults
        elif faults is not None and faults is not True:
            patch["faults"] = dict(faults)
        if retention_seconds is not None:
            patch["retention_seconds"] = float(retention_seconds)
        if patch:
            self._server.update(json.dumps(patch))

    def add_tinker_archive(self, name: str, data: bytes, ttl_seconds: float = 3600.0) -> str:
        """Host ``data`` as a Tinker-style checkpoint archive; returns a signed URL valid for
        ``ttl_seconds`` (403 afterwards). The URL is a credential: don't log it."""
        return self._server.add_archive(name, bytes(data), float(ttl_seconds))

    def close(self) -> None:
        """Stop the server and close its connections (idempotent); the port is free afterwards."""
        if not self._closed:
            self._closed = True
            self._server.shutdown()

    shutdown = close

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Emulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # best effort; the Rust side also stops on drop
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        state = "closed" if self._closed else "running"
        return f"<Emulator {state} base_url={self.base_url!r}>"
