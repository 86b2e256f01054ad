"""Secrets, TLS, redirects, and the emulator's own exposure.

- The API key and signed checkpoint URLs never appear in a repr, an error (str, repr,
  traceback, pickle), a log record, stdout/stderr, or the emulator's request log.
- TLS is verified by default (rustls); ``ca_bundle=`` adds a CA, and system roots are trusted.
- Redirects are never followed (a 3xx would carry the bearer token to wherever it points).
- The emulator binds loopback by default and refuses requests without its key.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import pickle
import ssl
import time
import traceback

import pytest

import sail_lite
from reliability_helpers import (
    MODEL,
    Reply,
    ScriptedServer,
    SilentServer,
    completed_body,
    listening_addresses,
    make_tls_files,
    prompt_for,
    sail_completer,
    sail_script,
)
from sail_lite.emulator import Emulator

API_KEY = "sk-sail-SECRET-3c1f9a7e52d84b06"
WRONG_KEY = "sk-sail-WRONG-0b9e4d1c77a2f3e8"
ADAPTER_CONFIG = {
    "peft_type": "LORA",
    "task_type": "CAUSAL_LM",
    "r": 8,
    "lora_alpha": 16,
    "target_modules": ["q_proj", "v_proj"],
    "base_model_name_or_path": "moonshotai/Kimi-K2.6",
}


def error_texts(err: BaseException) -> list[str]:
    """Every way an error is commonly shown or shipped."""
    return [
        str(err),
        repr(err),
        "".join(traceback.format_exception(err)),
        repr(vars(err)),
        pickle.dumps(err).decode("latin-1"),
    ]


def outcome(completer, prompt=None) -> BaseException | None:
    try:
        asyncio.run(asyncio.wait_for(completer(prompt or prompt_for(0)), 30))
    except sail_lite.SailError as err:
        return err
    return None


@pytest.mark.timeout(180)
def test_secrets_never_leak(tmp_path, capfd, caplog):
    caplog.set_level(logging.DEBUG)  # every logger, every level
    request_log = tmp_path / "requests.jsonl"
    shown: list[str] = []
    errors: list[BaseException] = []

    def check(completer, prompt=None, expect_error=True):
        shown.extend([repr(completer), str(completer), repr(completer._client)])
        err = outcome(completer, prompt)
        assert (err is not None) == expect_error, err
        if err is not None:
            errors.append(err)
            shown.extend(error_texts(err))

    with Emulator(api_key=API_KEY, latency=0, request_log=str(request_log)) as emu:
        signed = emu.add_tinker_archive("ckpt-step-10", b"not a tar archive", ttl_seconds=3600)
        expired = emu.add_tinker_archive("ckpt-step-0", b"x", ttl_seconds=0.001)
        signatures = [url.split("?", 1)[1] for url in (signed, expired)]
        shown.append(repr(emu))

        check(sail_completer(emu, api_key=API_KEY), expect_error=False)
        # A Tinker checkpoint by signed URL: the adapter fails to load, then the URL expires.
        for url in (signed, expired):
            lora = sail_completer(emu, model="moonshotai/Kimi-K2.6", api_key=API_KEY, tinker_lora_signed_url=url,
                                  adapter_config=ADAPTER_CONFIG, tinker_lora_name="step-10")
            check(lora)
            # The server's stored response (what a poll returns) echoes the metadata, redacted.
            conn = http.client.HTTPConnection(emu.host, emu.port, timeout=10)
            conn.request("GET", f"/v1/responses/{errors[-1].response_id}", headers={"Authorization": f"Bearer {API_KEY}"})
            shown.append(conn.getresponse().read().decode())
            conn.close()
        check(sail_completer(emu, api_key=WRONG_KEY))
        check(sail_lite.OpenAICompatibleTokenCompleter(model=MODEL, max_tokens=4, base_url=emu.openai_base_url, api_key=WRONG_KEY))
        emu.update(faults={"rate_500": 1.0})
        check(sail_completer(emu, api_key=API_KEY, max_retries=1))
        emu.update(faults={"rate_500": 0.0})
        shown.append(json.dumps(emu.stats()))
        port = emu.port

    # Transport failures, with the key set: connection refused, a server that never answers.
    check(sail_completer(base_url=f"http://127.0.0.1:{port}", api_key=API_KEY, max_retries=0))
    with SilentServer() as silent:
        check(sail_completer(base_url=silent.base_url, api_key=API_KEY, poll_timeout=0.5))
    # Bad arguments that contain a secret.
    for bad in ({"api_key": API_KEY + "\n"}, {"tinker_lora_signed_url": signed.replace("http://", "ftp://"), "adapter_config": ADAPTER_CONFIG}):
        with pytest.raises(sail_lite.SailArgumentError) as info:
            sail_completer(base_url="http://127.0.0.1:9", **{"api_key": API_KEY, **bad})
        shown.extend(error_texts(info.value))

    out, err = capfd.readouterr()
    corpus = {
        "reprs and errors": "\n".join(shown),
        "stdout": out,
        "stderr": err,
        "log records": caplog.text,
        "request log": request_log.read_text(),
    }
    assert len(errors) == 7 and corpus["request log"].count("\n") > 5
    for where, text in corpus.items():
        for secret in (API_KEY, WRONG_KEY, signed, expired, *signatures):
            assert secret not in text, f"a secret leaked into the {where}"
    # The redacted forms are what is shown instead.
    assert "<signed url>" in corpus["reprs and errors"]
    assert "/_tinker/archives/ckpt-step-10.tar?<redacted>" in corpus["reprs and errors"]


# --- TLS ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    files = make_tls_files(tmp_path_factory.mktemp("tls"))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(files.cert, files.key)
    script = sail_script(lambda rid, n: Reply.json(200, completed_body(rid, [5, 6], [-0.5, -0.75])))
    with ScriptedServer(script, ssl_context=context) as server:
        yield server, files


@pytest.mark.timeout(60)
def test_tls_is_verified_by_default(tls_server):
    server, _ = tls_server
    before = len(server.requests)
    started = time.monotonic()
    err = outcome(sail_completer(base_url=server.base_url, api_key=API_KEY))
    assert isinstance(err, sail_lite.SailConnectionError), repr(err)
    assert "certificate" in str(err), str(err)
    assert len(server.requests) == before, "a request went out over an unverified connection"
    # A verification failure cannot heal by retrying: it fails at once.
    assert err.attempts == 1 and time.monotonic() - started < 5


@pytest.mark.timeout(60)
def test_ca_bundle_adds_a_trusted_ca(tls_server):
    server, files = tls_server
    completer = sail_completer(base_url=server.base_url, api_key=API_KEY, max_retries=0, ca_bundle=str(files.ca))
    sample = asyncio.run(completer(prompt_for(0)))
    assert sample.tokens == [5, 6]
    assert server.requests[-1].headers["authorization"] == f"Bearer {API_KEY}"


@pytest.mark.timeout(60)
def test_system_roots_are_trusted(tls_server, monkeypatch):
    """The engine trusts the platform's roots (rustls-native-certs), which honour
    ``SSL_CERT_FILE``. An HTTP client, with its root store, is built per origin on first use,
    so a fresh origin ("localhost" rather than 127.0.0.1) picks the variable up."""
    server, files = tls_server
    monkeypatch.setenv("SSL_CERT_FILE", str(files.ca))
    completer = sail_completer(base_url=server.base_url.replace("127.0.0.1", "localhost"), api_key=API_KEY, max_retries=0)
    assert asyncio.run(completer(prompt_for(0))).tokens == [5, 6]


# --- redirects ----------------------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("where", ["create", "poll"])
@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_redirects_are_not_followed(where, status):
    with ScriptedServer(lambda request: Reply.json(200, {"id": "resp_1", "status": "completed", "output": []})) as elsewhere:
        target = f"{elsewhere.base_url}/v1/responses"
        sail = sail_script(lambda rid, n: Reply(status, b"", headers={"Location": f"{target}/{rid}"}))

        def respond(request):
            if where == "create" and request.method == "POST":
                return Reply(status, b"", headers={"Location": target})
            return sail(request)

        with ScriptedServer(respond) as origin:
            err = outcome(sail_completer(base_url=origin.base_url, api_key=API_KEY))
            sent = [r.method for r in origin.requests if not r.path.endswith("/cancel")]
        assert isinstance(err, sail_lite.SailAPIStatusError) and err.status == status, repr(err)
        assert elsewhere.requests == [], "the redirect was followed (with the bearer token)"
        # 3xx is not transient: one attempt, not retried.
        assert sent == (["POST"] if where == "create" else ["POST", "GET"])


# --- the emulator's exposure --------------------------------------------------------------


@pytest.mark.timeout(30)
def test_emulator_binds_loopback_and_requires_its_key():
    with Emulator(api_key=API_KEY, latency=0) as emu:
        assert emu.host == "127.0.0.1"
        assert listening_addresses(emu.port) == ["0100007F"]  # 127.0.0.1, as /proc/net/tcp spells it

        def get(path: str, key: str | None):
            conn = http.client.HTTPConnection(emu.host, emu.port, timeout=10)
            headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            status, body = response.status, response.read().decode()
            conn.close()
            return status, body

        for key in (None, WRONG_KEY, "", API_KEY + "x", API_KEY.upper()):
            status, body = get("/v1/models", key)
            assert status == 401, (key, status)
            assert API_KEY not in body and (not key or key not in body)
        assert get("/v1/models", API_KEY)[0] == 200

        err = outcome(sail_completer(emu, api_key=WRONG_KEY))
        assert isinstance(err, sail_lite.SailAuthenticationError) and err.status == 401
        assert err.attempts == 1, "an authentication failure is not worth retrying"
        assert emu.stats()["creates"] == 0
