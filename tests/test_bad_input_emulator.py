"""The emulator's request parsing: oversized bodies, malformed JSON, wrong types and odd
headers get a 4xx with the error envelope, never a 5xx, a dropped connection or a panic; the
server keeps serving afterwards."""

from __future__ import annotations

import asyncio
import http.client
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reliability_helpers import MODEL, prompt_for, sail_completer
from sail_lite.emulator import Emulator

MAX_BODY = 64 * 1024


@pytest.fixture(scope="module")
def emu():
    with Emulator(latency=0, max_body_bytes=MAX_BODY) as e:
        yield e


def send(emu: Emulator, method: str, path: str, body: bytes | None = None, headers: dict | None = None) -> tuple[int, bytes]:
    """One request on a fresh connection; a reset or a missing answer raises."""
    conn = http.client.HTTPConnection(emu.host, emu.port, timeout=30)
    try:
        all_headers = {"Authorization": f"Bearer {emu.api_key}", "Content-Type": "application/json", **(headers or {})}
        conn.request(method, path, body=body, headers=all_headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def assert_client_error(status: int, body: bytes, expected_status: int | None = None) -> dict:
    assert 400 <= status < 500, (status, body[:300])
    if expected_status is not None:
        assert status == expected_status, (status, body[:300])
    envelope = json.loads(body)
    assert envelope["error"]["message"] and envelope["error"]["type"], envelope
    return envelope["error"]


def still_serves(emu: Emulator) -> None:
    completer = sail_completer(emu)
    sample = asyncio.run(completer(prompt_for(0)))
    assert sample.tokens


def create(raw_prompt_tokens=None, **fields) -> bytes:
    body = {"model": MODEL, "input": "x", "raw_prompt_tokens": raw_prompt_tokens or [1, 2, 3], "background": True, **fields}
    return json.dumps(body).encode()


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "body, status, param",
    [
        (b"", 400, None),
        (b"{", 400, None),
        (b"not json at all", 400, None),
        (b"\xff\xfe\xfd", 400, None),
        (b"[1, 2, 3]", 400, None),
        (b'{"model": "m"} trailing', 400, None),
        (b"[" * 50_000, 400, None),  # nesting far past serde's recursion limit: no stack overflow
        (create(max_output_tokens=10**30), 400, "max_output_tokens"),
        (create(raw_prompt_tokens="abc"), 400, "raw_prompt_tokens"),
        (create(raw_prompt_tokens=[1, -2]), 400, "raw_prompt_tokens"),
        (create(raw_prompt_tokens=[2**31]), 400, "raw_prompt_tokens"),
        (create(temperature="hot"), 400, "temperature"),
        (create(temperature=9.0), 400, "temperature"),
        (create(stop=[1, "x"]), 400, "stop"),
        (create(metadata={"completion_window": 5}), 400, "metadata.completion_window"),
        (create(metadata={"completion_window": "never"}), 400, "metadata.completion_window"),
        (create(model="no/such-model"), 400, "model"),
        (create(input=None), 400, "input"),
    ],
    ids=["empty", "open-brace", "text", "binary", "array", "trailing", "deep-nesting", "huge-int", "tokens-string",
         "negative-token", "token-too-big", "temperature-string", "temperature-range", "mixed-stop", "metadata-int",
         "unknown-window", "unknown-model", "missing-input"],
)
def test_create_rejects_malformed_bodies(emu, body, status, param):
    got, answer = send(emu, "POST", "/v1/responses", body)
    error = assert_client_error(got, answer, status)
    if param is not None:
        assert error.get("param") == param, error


@pytest.mark.timeout(60)
def test_oversized_bodies_get_413(emu):
    big = create(raw_prompt_tokens=[7] * (MAX_BODY // 2))
    assert len(big) > MAX_BODY
    assert_client_error(*send(emu, "POST", "/v1/responses", big), 413)
    assert_client_error(*send(emu, "POST", "/v1/completions", b"{" + b" " * (2 * MAX_BODY) + b"}"), 413)
    # Chunked (no Content-Length): the limit still holds.
    conn = http.client.HTTPConnection(emu.host, emu.port, timeout=30)
    try:
        conn.putrequest("POST", "/v1/responses")
        conn.putheader("Authorization", f"Bearer {emu.api_key}")
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        chunk = b" " * 16384
        try:
            for _ in range(2 * MAX_BODY // len(chunk)):
                conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            conn.send(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may answer and close before the whole body is sent
        response = conn.getresponse()
        assert response.status == 413, response.status
    finally:
        conn.close()
    still_serves(emu)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "method, path, headers, status",
    [
        ("POST", "/v1/responses", {"Idempotency-Key": "k" * 256}, 400),
        ("POST", "/v1/responses", {"Idempotency-Key": ""}, 400),
        ("GET", "/v1/responses/" + "x" * 5000, {}, 404),
        ("GET", "/v1/responses/resp_%00%ff", {}, 404),
        ("GET", "/v1/models/%ff", {}, 404),
        ("GET", "/_tinker/archives/%ff", {}, 404),
        ("POST", "/v1/responses/resp_0000000000000000/cancel", {}, 404),
        ("DELETE", "/v1/responses/nope", {}, 404),
        ("GET", "/v1/no-such-endpoint", {}, 404),
        ("PUT", "/v1/responses", {}, 405),
    ],
    ids=["long-idempotency-key", "empty-idempotency-key", "long-id", "odd-id", "odd-model-id", "odd-archive-name",
         "cancel-unknown", "delete-unknown", "unknown-path", "wrong-method"],
)
def test_odd_requests_get_4xx(emu, method, path, headers, status):
    body = create() if method in ("POST", "PUT") and not path.endswith("/cancel") else None
    assert_client_error(*send(emu, method, path, body, headers), status)


@pytest.mark.timeout(300)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(
    path=st.sampled_from(["/v1/responses", "/v1/completions"]),
    body=st.one_of(
        st.binary(max_size=300),
        st.dictionaries(
            st.sampled_from(["model", "input", "raw_prompt_tokens", "prompt", "max_output_tokens", "max_tokens", "temperature",
                             "top_p", "stop", "include", "background", "metadata", "logprobs", "n", "stream"]),
            st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                         lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                         max_leaves=10),
        ).map(lambda d: json.dumps(d).encode()),
    ),
)
def test_fuzzed_bodies_never_get_a_5xx(emu, path, body):
    status, answer = send(emu, "POST", path, body)
    # Random fields may happen to form a valid request; anything else is the client's fault.
    assert status < 500, (status, body[:200], answer[:300])
    if status >= 400:
        assert_client_error(status, answer)


@pytest.mark.timeout(60)
def test_still_serving_after_the_abuse(emu):
    still_serves(emu)
    assert emu.stats()["by_status"].get("500", 0) == 0
