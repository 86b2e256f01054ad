"""Raw-HTTP helpers for the emulator tests (standard library only, no sail_lite client code):
one request, a create body, create / poll / wait, and a free port. Shared by
test_emulator_protocol.py and test_emulator_lora.py, so no test module imports another."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from typing import Any

from sail_lite.emulator import Emulator

MODEL = "moonshotai/Kimi-K2.6"
FINAL = ("completed", "failed", "cancelled")

# A direct opener: never route loopback calls through an environment proxy.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Reply:
    def __init__(self, status: int, headers: Any, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.raw = body
        try:
            self.json: Any = json.loads(body) if body else None
        except ValueError:
            self.json = None

    @property
    def error(self) -> dict[str, Any]:
        return self.json["error"]

    def __repr__(self) -> str:
        return f"Reply({self.status}, {self.raw[:300]!r})"


def call(
    emu: Emulator,
    method: str,
    path: str,
    body: Any = None,
    *,
    key: str | None = "default",
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
    timeout: float = 30.0,
    url: str | None = None,
) -> Reply:
    """One HTTP request; 4xx/5xx come back as a Reply, not an exception."""
    hdrs = dict(headers or {})
    if key == "default":
        key = emu.api_key
    if key is not None:
        hdrs["Authorization"] = f"Bearer {key}"
    data = raw
    if body is not None:
        data = json.dumps(body).encode()
    if data is not None:
        hdrs.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(url or emu.base_url + path, data=data, method=method, headers=hdrs)
    try:
        with _OPENER.open(req, timeout=timeout) as r:
            return Reply(r.status, r.headers, r.read())
    except urllib.error.HTTPError as e:
        return Reply(e.code, e.headers, e.read())


def create_body(tokens: list[int] | None = None, **kw: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": MODEL,
        "input": "-",
        "raw_prompt_tokens": tokens if tokens is not None else [84, 104, 101, 32],
        "max_output_tokens": 12,
        "temperature": 0.7,
        "top_p": 1.0,
        "background": True,
        "metadata": {"completion_window": "priority"},
    }
    for k, v in kw.items():
        if k == "metadata":
            body["metadata"].update(v)
        else:
            body[k] = v
    return body


def create(emu: Emulator, body: dict[str, Any] | None = None, idem: str | None = None, **kw: Any) -> Reply:
    headers = {"Idempotency-Key": idem} if idem is not None else None
    return call(emu, "POST", "/v1/responses", body if body is not None else create_body(**kw), headers=headers)


def poll(emu: Emulator, rid: str) -> Reply:
    return call(emu, "GET", f"/v1/responses/{rid}")


def wait(emu: Emulator, rid: str, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        r = poll(emu, rid)
        assert r.status == 200, r
        if r.json["status"] in FINAL:
            return r.json
        assert time.monotonic() < deadline, f"{rid} still {r.json['status']}"
        time.sleep(0.01)


def wait_for(predicate: Any, timeout: float = 30.0) -> bool:
    """Poll ``predicate`` until true; the generous timeout only stops a broken run."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def sample(emu: Emulator, **kw: Any) -> dict[str, Any]:
    r = create(emu, **kw)
    assert r.status == 202, r
    return wait(emu, r.json["id"])


def output_block(resp: dict[str, Any]) -> dict[str, Any]:
    msg = next(o for o in resp["output"] if o["type"] == "message")
    return next(c for c in msg["content"] if c["type"] == "output_text")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
