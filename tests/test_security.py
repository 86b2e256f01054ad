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


# --- a hostile server echoing secrets back ---------------------------------------------------

# A key with no recognisable shape: only masking by value can catch it.
OPAQUE_KEY = "opaque7Kq2ZxV9mW4pT8"
SIGNED_URL = "https://storage.test/bucket/ckpt-7.tar?X-Goog-Credential=svc%40p.iam&X-Goog-Signature=9f8e7d6c5b4a39281706"
HOSTILE_ADAPTER_MODEL = "moonshotai/Kimi-K2.6"


def echoing_script(mode: str):
    """A Sail double that quotes the request back at the client, as a careless proxy or a
    debugging build of a server might: the Authorization header and the whole body (whose
    metadata carries the signed LoRA URL) end up in its error messages."""
    sail = sail_script(lambda rid, n: Reply.json(200, completed_body(rid, [5, 6], [-0.5, -0.75])))
    creates = 0

    def respond(request):
        nonlocal creates
        auth = request.headers.get("authorization", "")
        echo = f"{auth} {request.body.decode()}"
        key = auth.removeprefix("Bearer ")
        if request.method == "POST" and request.path == "/v1/responses":
            creates += 1
            if mode == "status":
                return Reply.json(400, {"error": {"message": f"rejected: {echo}", "type": f"invalid_request_error ({auth})", "code": key}})
            if mode == "bare_key":
                return Reply.json(401, {"error": {"message": f"unknown key {key}; signature {SIGNED_URL.split('?')[1]}", "code": "invalid_api_key"}})
            if mode == "retry" and creates == 1:
                return Reply.json(503, {"error": {"message": f"overloaded while handling {echo}"}})
            return Reply.json(202, {"id": "resp_echo", "object": "response", "status": "queued"})
        if request.method == "GET" and request.path.startswith("/v1/responses/"):
            if mode == "failed":
                return Reply.json(200, {"id": "resp_echo", "status": "failed", "error": {"message": f"could not download {SIGNED_URL} for {auth}", "code": key}})
            if mode == "serde":
                body = completed_body("resp_echo", [5, 6], None)
                body["output"][0]["content"][0]["token_ids"] = [key, SIGNED_URL]
                return Reply.json(200, body)
        return sail(request)

    return respond


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", ["status", "bare_key", "failed", "serde", "retry"])
@pytest.mark.parametrize("api_key", [API_KEY, OPAQUE_KEY])
def test_a_server_echoing_secrets_cannot_leak_them(mode, api_key, caplog):
    caplog.set_level(logging.DEBUG)  # the engine's retry / cancel events included
    with ScriptedServer(echoing_script(mode)) as server:
        completer = sail_completer(
            base_url=server.base_url, api_key=api_key, model=HOSTILE_ADAPTER_MODEL, max_retries=2,
            tinker_lora_signed_url=SIGNED_URL, adapter_config=ADAPTER_CONFIG, tinker_lora_name="step-7",
        )
        err = outcome(completer)
        # The server really did receive (and so could echo) both secrets.
        assert server.requests[0].headers["authorization"] == f"Bearer {api_key}"
        assert SIGNED_URL in server.requests[0].body.decode()
    texts = [repr(completer), *([] if err is None else error_texts(err)), caplog.text,
             *(repr(r.__dict__) for r in caplog.records)]
    secrets = (api_key, SIGNED_URL, SIGNED_URL.split("?")[1], "9f8e7d6c5b4a39281706")
    for text in texts:
        for secret in secrets:
            assert secret not in text, f"{secret!r} leaked in mode {mode}: {text[:2000]}"
    if mode == "retry":
        assert err is None
        retries = [r for r in caplog.records if getattr(r, "sail_event", None) == "retry"]
        assert retries and "overloaded" in retries[0].getMessage() and "<redacted>" in retries[0].getMessage()
        return
    expected = {"status": sail_lite.SailAPIStatusError, "bare_key": sail_lite.SailAuthenticationError,
                "failed": sail_lite.SailResponseFailedError, "serde": sail_lite.SailProtocolError}[mode]
    assert isinstance(err, expected), repr(err)
    assert "<redacted>" in str(err) or mode == "serde", str(err)
    if mode == "status":
        # The envelope's `type` is kept (redacted), as documented.
        assert err.error_type is not None and err.error_type.startswith("invalid_request_error"), err.error_type
        assert err.code == "<redacted>" and err.status == 400
    # What was redacted still says what went wrong.
    again = pickle.loads(pickle.dumps(err))
    assert type(again) is type(err) and str(again) == str(err) and again.error_type == err.error_type


# --- arguments that would leak or break every request ------------------------------------


@pytest.mark.parametrize(
    "base_url",
    [
        "https://api.test/root?token=s3cr3t-QUERY-value",
        "https://api.test/root#s3cr3t-QUERY-value",
        "https://user:s3cr3t-QUERY-value@api.test",
        "https://s3cr3t-QUERY-value@api.test/v1",
    ],
)
def test_base_url_with_query_fragment_or_credentials_is_refused_unprinted(base_url):
    with pytest.raises(sail_lite.SailArgumentError) as info:
        sail_completer(base_url=base_url, api_key=API_KEY)
    assert info.value.argument == "base_url"
    for text in error_texts(info.value):
        assert "s3cr3t-QUERY-value" not in text
    assert "api.test" in str(info.value), "the message still says which URL"


@pytest.mark.parametrize("argument", ["model", "completion_window", "lora", "tinker_lora_name", "metadata_value", "metadata_key"])
def test_lone_surrogates_are_argument_errors(argument):
    bad = "bad\udcff"
    kwargs = {"model": bad} if argument == "model" else {}
    if argument in ("completion_window", "lora", "tinker_lora_name"):
        kwargs[argument] = bad
    if argument == "metadata_value":
        kwargs["metadata"] = {"k": bad}
    if argument == "metadata_key":
        kwargs["metadata"] = {bad: "v"}
    with pytest.raises(sail_lite.SailArgumentError) as info:
        sail_completer(base_url="http://127.0.0.1:9", api_key=API_KEY, **kwargs)
    assert "surrogate" in str(info.value)
    assert info.value.argument.startswith(argument.split("_")[0] if argument.startswith("metadata") else argument)


def test_lone_surrogate_in_stop_is_an_argument_error():
    completer = sail_completer(base_url="http://127.0.0.1:9", api_key=API_KEY)
    for stop in ("\ud800", ["ok", "x\udfff"]):
        with pytest.raises(sail_lite.SailArgumentError) as info:
            asyncio.run(completer(prompt_for(0), stop))
        assert info.value.argument == "stop" and "surrogate" in str(info.value)


@pytest.mark.parametrize("api_key", ["sk-s\u00e9cret-key", "sk-\udcffsecret"])
def test_non_ascii_api_key_is_refused_at_construction_unprinted(api_key):
    with pytest.raises(sail_lite.SailArgumentError) as info:
        sail_completer(base_url="http://127.0.0.1:9", api_key=api_key)
    assert info.value.argument == "api_key"
    for text in error_texts(info.value):
        assert "cret" not in text
