"""The emulator speaks Sail's protocol: every endpoint, status, error and validation rule, checked
over real loopback HTTP with the standard library only (no client code from sail_lite)."""

from __future__ import annotations

import http.client
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from sail_lite.emulator import Emulator

from emulator_http import MODEL, Reply, call, create, create_body, free_port, output_block, poll, sample, wait, wait_for

# --- models, auth, the Emulator object -------------------------------------------------------


def test_models_list(emulator: Emulator) -> None:
    r = call(emulator, "GET", "/v1/models")
    assert r.status == 200
    assert r.json["object"] == "list"
    assert [m["id"] for m in r.json["data"]] == [MODEL, "sail-lite/byte-ngram"]
    assert call(emulator, "GET", f"/v1/models/{MODEL}").json["id"] == MODEL
    assert call(emulator, "GET", "/v1/models/nope").status == 404


@pytest.mark.parametrize("key", [None, "sk-wrong", ""])
def test_missing_or_wrong_key_is_401(emulator: Emulator, key: str | None) -> None:
    for method, path, body in [
        ("GET", "/v1/models", None),
        ("POST", "/v1/responses", create_body()),
        ("GET", "/v1/responses/resp_0000000000000001", None),
        ("POST", "/v1/completions", {"model": MODEL, "prompt": [1]}),
    ]:
        r = call(emulator, method, path, body, key=key)
        assert r.status == 401, r
        assert set(r.error) == {"message", "type", "param", "code"}
        assert r.error["code"] == "invalid_api_key"
        if key:
            assert key not in r.raw.decode()


def test_configurable_key_and_models(fresh_emulator: Any) -> None:
    emu = fresh_emulator(api_key="sk-custom", models=["m1"], windows=["asap", "slow"], default_window="slow")
    assert emu.api_key == "sk-custom"
    assert call(emu, "GET", "/v1/models", key="sk-sail-lite-local").status == 401
    assert [m["id"] for m in call(emu, "GET", "/v1/models").json["data"]] == ["m1"]
    body = create_body(model="m1")
    body["metadata"] = {}
    r = create(emu, body)
    assert r.status == 202, r
    assert wait(emu, r.json["id"])["status"] == "completed"
    body["metadata"] = {"completion_window": "priority"}
    r = create(emu, body)
    assert r.status == 400 and r.error["param"] == "metadata.completion_window"


def test_emulator_object(fresh_emulator: Any) -> None:
    emu = fresh_emulator(api_key="sk-very-secret-123")
    assert emu.base_url == f"http://127.0.0.1:{emu.port}"
    assert not emu.base_url.endswith("/v1")
    assert emu.openai_base_url == emu.base_url + "/v1"
    assert "sk-very-secret-123" not in repr(emu)
    assert "sk-very-secret-123" not in str(emu)
    emu.close()
    emu.close()  # idempotent
    assert emu.closed
    with pytest.raises(OSError):
        call(emu, "GET", "/v1/models", timeout=2)


def test_close_frees_the_port_and_a_taken_port_is_oserror() -> None:
    port = free_port()
    with Emulator(port=port, latency=0) as emu:
        assert emu.port == port
        with pytest.raises(OSError):
            Emulator(port=port)
        assert call(emu, "GET", "/v1/models").status == 200
    with Emulator(port=port, latency=0) as again:
        assert call(again, "GET", "/v1/models").status == 200


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"faults": {"rate_500": 2}}, "faults.rate_500"),
        ({"faults": {"rate_bogus": 0.1}}, "rate_bogus"),
        ({"latency": {"scale": -1}}, "latency.scale"),
        ({"worker_threads": 0}, "worker_threads"),
        ({"models": []}, "models"),
        ({"faults": {"apply_to": ["everything"]}}, "apply_to"),
        ({"loras": {"x": {"rank": 99}}}, "loras.x"),
        ({"unknown_option": 1}, "unknown_option"),
    ],
)
def test_bad_config_is_valueerror_naming_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        Emulator(**kwargs)


# --- create, poll, output shape --------------------------------------------------------------


def test_background_create_then_poll_completed(emulator: Emulator) -> None:
    r = create(emulator)
    assert r.status == 202
    assert r.json["status"] in ("queued", "pending")
    assert r.json["object"] == "response"
    assert r.json["id"].startswith("resp_")
    done = wait(emulator, r.json["id"])
    assert done["status"] == "completed"
    assert done["model"] == MODEL
    assert done["error"] is None
    block = output_block(done)
    assert done["output"][0]["type"] == "message"
    assert isinstance(block["text"], str)
    assert all(isinstance(t, int) and 0 <= t <= 256 for t in block["token_ids"])
    assert block["stop_reason"] in ("stop", "length")
    assert "logprobs" not in block or not block["logprobs"]
    n = len(block["token_ids"])
    assert done["usage"] == {
        "input_tokens": 4, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": n, "total_tokens": 4 + n,
    }


def test_logprobs_only_when_included(emulator: Emulator) -> None:
    done = sample(emulator, include=["message.output_text.logprobs"])
    block = output_block(done)
    assert len(block["logprobs"]) == len(block["token_ids"])
    for tok, lp in zip(block["token_ids"], block["logprobs"]):
        assert lp["token_id"] == tok
        assert lp["logprob"] <= 0.0


def test_max_tokens_cut_is_completed_with_length(emulator: Emulator) -> None:
    for seed in range(5):
        done = sample(emulator, max_output_tokens=1, metadata={"seed": str(seed)})
        block = output_block(done)
        assert done["status"] == "completed"
        assert done["incomplete_details"] is None
        if block["token_ids"] != [256]:
            assert block["stop_reason"] == "length"


def test_stop_forms(emulator: Emulator) -> None:
    for stop in ["e", ["e", " "], [101, 32], []]:
        done = sample(emulator, stop=stop, max_output_tokens=64)
        assert done["status"] == "completed"
    done = sample(emulator, stop=[32, 101, 116], max_output_tokens=200, temperature=1.0)
    toks = output_block(done)["token_ids"]
    if output_block(done)["stop_reason"] == "stop":
        assert toks[-1] in (32, 101, 116, 256)


def test_seed_makes_samples_reproducible(emulator: Emulator) -> None:
    a = sample(emulator, metadata={"seed": "1234"}, max_output_tokens=24)
    b = sample(emulator, metadata={"seed": "1234"}, max_output_tokens=24)
    assert output_block(a)["token_ids"] == output_block(b)["token_ids"]


def test_foreground_answers_200_when_done(emulator: Emulator) -> None:
    r = create(emulator, background=False)
    assert r.status == 200
    assert r.json["status"] == "completed"
    assert r.json["background"] is False


def test_text_input_request(emulator: Emulator) -> None:
    body = {"model": MODEL, "input": [{"role": "user", "content": "Hello"}], "max_output_tokens": 4}
    r = create(emulator, body)
    assert r.status == 200
    assert r.json["usage"]["input_tokens"] == 5


def test_two_million_token_prompt(emulator: Emulator) -> None:
    r = create(emulator, create_body([7] * 2_000_000, max_output_tokens=2))
    assert r.status == 202, r
    assert wait(emulator, r.json["id"], timeout=30)["usage"]["input_tokens"] == 2_000_000


def test_statuses_move_queued_in_progress_completed(fresh_emulator: Any) -> None:
    emu = fresh_emulator(latency={"windows": {"priority": 1.2}, "jitter": 0, "in_progress_fraction": 0.5})
    r = create(emu)
    rid = r.json["id"]
    assert r.json["status"] == "queued"
    assert poll(emu, rid).json["status"] == "queued"
    time.sleep(0.8)
    assert poll(emu, rid).json["status"] == "in_progress"
    assert emu.stats()["in_progress"] == 1
    assert wait(emu, rid)["status"] == "completed"
    # asap has no scheduled delay by default (config.rs asserts its 0 s); its generation still
    # runs on an emulator worker, which a loaded machine may not have reached by the first poll.
    asap = create(emu, metadata={"completion_window": "asap"})
    assert wait(emu, asap.json["id"])["status"] == "completed"


def test_latency_scale_and_live_update(fresh_emulator: Any) -> None:
    emu = fresh_emulator(latency={"scale": 0.1, "jitter": 0})  # priority 1 s -> 0.1 s
    t0 = time.monotonic()
    sample(emu)
    assert time.monotonic() - t0 >= 0.09
    # Scaled, not the unscaled 1 s: 0.3 s after its create (measured by the server's clock,
    # so a slow client cannot make this fail) the response is done.
    scaled = create(emu)
    time.sleep(0.3)
    assert poll(emu, scaled.json["id"]).json["status"] == "completed"
    emu.update(latency=0)
    instant = create(emu)
    assert poll(emu, instant.json["id"]).json["status"] == "completed"


# --- validation ------------------------------------------------------------------------------

BAD_CREATES = [
    ({"model": "gpt-nope"}, "model"),
    ({"raw_prompt_tokens": []}, "raw_prompt_tokens"),
    ({"raw_prompt_tokens": [-1]}, "raw_prompt_tokens"),
    ({"raw_prompt_tokens": [2**31]}, "raw_prompt_tokens"),
    ({"raw_prompt_tokens": [1.5]}, "raw_prompt_tokens"),
    ({"raw_prompt_tokens": ["a"]}, "raw_prompt_tokens"),
    ({"raw_prompt_tokens": 5}, "raw_prompt_tokens"),
    ({"max_output_tokens": 0}, "max_output_tokens"),
    ({"max_output_tokens": "8"}, "max_output_tokens"),
    ({"temperature": 2.01}, "temperature"),
    ({"temperature": -1}, "temperature"),
    ({"top_p": 1.01}, "top_p"),
    ({"top_p": -0.5}, "top_p"),
    ({"stop": 3}, "stop"),
    ({"stop": ["a", 3]}, "stop"),
    ({"stop": [-4]}, "stop"),
    ({"stop": {"a": 1}}, "stop"),
    ({"input": ""}, "input"),
    ({"input": []}, "input"),
    ({"metadata": {"completion_window": "yesterday"}}, "metadata.completion_window"),
    ({"metadata": {"n": 3}}, "metadata.n"),
    ({"metadata": {"flag": True}}, "metadata.flag"),
    ({"metadata": {"lora": "style-a", "completion_window": "asap"}}, "metadata.lora"),
    ({"metadata": {"lora": "no-such-lora"}}, "metadata.lora"),
    ({"metadata": {"lora": "https://storage.example/a.tar?sig=1"}}, "metadata.tinker_adapter_config"),
    ({"metadata": {"lora": "https://storage.example/a.tar?sig=1", "tinker_adapter_config": "not json"}}, "metadata.tinker_adapter_config"),
    ({"metadata": {"seed": "twelve"}}, "metadata.seed"),
    ({"background": "yes"}, "background"),
    ({"include": "message.output_text.logprobs"}, "include"),
    ({"stream": True}, "stream"),
]


@pytest.mark.parametrize("change, param", BAD_CREATES, ids=[p + ":" + json.dumps(c)[:40] for c, p in BAD_CREATES])
def test_create_validation_names_the_field(emulator: Emulator, change: dict[str, Any], param: str) -> None:
    body = create_body()
    for k, v in change.items():
        if k == "metadata":
            body["metadata"].update(v)
        else:
            body[k] = v
    before = emulator.stats()["creates"]
    r = create(emulator, body)
    assert r.status == 400, r
    assert r.error["param"] == param
    assert r.error["type"] == "invalid_request_error"
    assert len(r.error["message"]) > 10
    assert emulator.stats()["creates"] == before


@pytest.mark.parametrize("missing", ["model", "input"])
def test_missing_required_fields(emulator: Emulator, missing: str) -> None:
    body = create_body()
    del body[missing]
    r = create(emulator, body)
    assert r.status == 400
    assert r.error["param"] == missing
    assert r.error["code"] == "missing_required_parameter"


def test_malformed_bodies_are_400_with_the_envelope(emulator: Emulator) -> None:
    for raw in [b"{", b"", b"[]", b"null", b"42", b'{"model": }', b"\xff\xfe\x00", b'{"model": "x"} extra']:
        for path in ("/v1/responses", "/v1/completions"):
            r = call(emulator, "POST", path, raw=raw, headers={"Content-Type": "application/json"})
            assert r.status == 400, (raw, r)
            assert set(r.error) == {"message", "type", "param", "code"}


def test_oversized_body_is_413(fresh_emulator: Any) -> None:
    emu = fresh_emulator(max_body_bytes=64 * 1024)
    r = create(emu, create_body(list(range(100)) * 400))
    assert r.status == 413
    assert r.error["code"] == "request_too_large"
    assert create(emu).status == 202


def test_unknown_paths_and_methods(emulator: Emulator) -> None:
    assert call(emulator, "GET", "/v1/nothing").status == 404
    assert call(emulator, "PUT", "/v1/responses").status == 405
    assert call(emulator, "GET", "/v1/responses/not-an-id").status == 404


# --- idempotency -----------------------------------------------------------------------------


def test_idempotent_replay_returns_the_same_response(fresh_emulator: Any) -> None:
    emu = fresh_emulator()
    body = create_body()
    first = create(emu, body, idem="key-1")
    assert first.status == 202
    done = wait(emu, first.json["id"])
    again = create(emu, body, idem="key-1")
    assert again.status == 200
    assert again.json == done
    s = emu.stats()
    assert (s["creates"], s["idempotent_replays"], s["duplicate_samples"]) == (1, 1, 0)


def test_replay_of_a_running_response_returns_its_current_state(fresh_emulator: Any) -> None:
    emu = fresh_emulator(latency={"windows": {"priority": 0.5}, "jitter": 0})
    body = create_body()
    a = create(emu, body, idem="k")
    b = create(emu, body, idem="k")
    assert b.status == 202
    assert b.json["id"] == a.json["id"]
    assert b.json["status"] in ("queued", "in_progress")


def test_same_key_different_body_is_idempotency_error(emulator: Emulator) -> None:
    assert create(emulator, create_body(), idem="conflict-key").status == 202
    r = create(emulator, create_body(max_output_tokens=3), idem="conflict-key")
    assert r.status == 400
    assert r.error["code"] == "idempotency_error"


def test_failed_validation_does_not_consume_the_key(emulator: Emulator) -> None:
    assert create(emulator, create_body(temperature=7), idem="fresh-key").status == 400
    r = create(emulator, create_body(max_output_tokens=5), idem="fresh-key")
    assert r.status == 202


def test_key_length_limit(emulator: Emulator) -> None:
    r = create(emulator, idem="k" * 256)
    assert r.status == 400
    assert r.error["param"] == "Idempotency-Key"
    assert create(emulator, idem="k" * 255).status == 202


def test_concurrent_retries_with_one_key_start_one_sample(fresh_emulator: Any) -> None:
    emu = fresh_emulator(latency={"windows": {"priority": 0.3}})
    body = create_body()
    with ThreadPoolExecutor(16) as pool:
        ids = set(pool.map(lambda _: create(emu, body, idem="burst").json["id"], range(48)))
    assert len(ids) == 1
    s = emu.stats()
    assert (s["creates"], s["idempotent_replays"], s["duplicate_samples"]) == (1, 47, 0)


# --- cancel, delete, expiry ------------------------------------------------------------------


def test_cancel(fresh_emulator: Any) -> None:
    emu = fresh_emulator(latency={"windows": {"standard": 30}})
    rid = create(emu, metadata={"completion_window": "standard"}).json["id"]
    r = call(emu, "POST", f"/v1/responses/{rid}/cancel")
    assert r.status == 200
    assert r.json["status"] == "cancelled"
    assert poll(emu, rid).json["status"] == "cancelled"
    assert emu.stats()["in_flight"] == 0
    # Cancelling a finished response returns it unchanged.
    done = sample(emu, metadata={"completion_window": "asap"})
    r = call(emu, "POST", f"/v1/responses/{done['id']}/cancel")
    assert r.status == 200 and r.json == done
    assert call(emu, "POST", "/v1/responses/resp_00000000000000aa/cancel").status == 404
    s = emu.stats()
    assert (s["cancels_received"], s["cancels_effective"]) == (3, 1)


def test_delete(emulator: Emulator) -> None:
    done = sample(emulator)
    r = call(emulator, "DELETE", f"/v1/responses/{done['id']}")
    assert r.status == 200 and r.json["deleted"] is True
    assert poll(emulator, done["id"]).status == 404


def test_unknown_id_is_404(emulator: Emulator) -> None:
    r = poll(emulator, "resp_0123456789abcdef")
    assert r.status == 404
    assert r.error["message"]


def test_finished_responses_expire(fresh_emulator: Any) -> None:
    emu = fresh_emulator(retention_seconds=0.3)
    done = sample(emu)
    assert poll(emu, done["id"]).status == 200
    time.sleep(0.3)  # never gone before its retention (the first poll above proved it was there)
    assert wait_for(lambda: poll(emu, done["id"]).status == 404), "a finished response outlived its retention"
    assert emu.stats()["expired"] >= 1
    emu.update(retention_seconds=3600)
    done = sample(emu)
    time.sleep(0.45)
    assert poll(emu, done["id"]).status == 200


# --- faults ----------------------------------------------------------------------------------


def test_429_with_retry_after(fresh_emulator: Any) -> None:
    emu = fresh_emulator(faults={"rate_429": 1.0, "retry_after_seconds": 0.2})
    r = create(emu)
    assert r.status == 429
    assert r.headers["Retry-After"] == "1"
    assert r.headers["retry-after-ms"] == "200"
    assert r.error["code"] == "rate_limit_exceeded"
    assert emu.stats()["creates"] == 0


@pytest.mark.parametrize("code", [500, 502, 503])
def test_5xx_before_creation(fresh_emulator: Any, code: int) -> None:
    emu = fresh_emulator(faults={f"rate_{code}": 1.0, "after_create_fraction": 0.0})
    r = create(emu)
    assert r.status == code
    assert r.error["type"] == "server_error"
    s = emu.stats()
    assert s["creates"] == 0 and s["faults"][str(code)] == 1 and s["by_status"][str(code)] == 1


def test_5xx_after_creation_makes_idempotency_matter(fresh_emulator: Any) -> None:
    emu = fresh_emulator(faults={"rate_502": 1.0, "after_create_fraction": 1.0})
    body = create_body()
    assert create(emu, body, idem="retry").status == 502
    assert create(emu, body).status == 502  # without a key the retry...
    emu.update(faults={"rate_502": 0.0})
    assert create(emu, body, idem="retry").status in (200, 202)
    s = emu.stats()
    assert s["creates"] == 2  # ...one keyed sample + one unkeyed, never a duplicate for the key
    assert s["idempotent_replays"] == 1
    assert s["duplicate_samples"] == 0


def test_dropped_connection(fresh_emulator: Any) -> None:
    emu = fresh_emulator(faults={"rate_drop": 1.0, "after_create_fraction": 0.0})
    conn = http.client.HTTPConnection("127.0.0.1", emu.port, timeout=10)
    # The server may hang up while the request is still being sent (a reset in request()) or
    # before it answers (getresponse()): either is the dropped connection.
    with pytest.raises((ConnectionError, http.client.RemoteDisconnected, http.client.BadStatusLine)):
        conn.request("POST", "/v1/responses", json.dumps(create_body()),
                     {"Authorization": f"Bearer {emu.api_key}", "Content-Type": "application/json"})
        conn.getresponse()
    conn.close()
    assert emu.stats()["faults"]["drop"] == 1
    emu.update(faults={"rate_drop": 0})
    assert create(emu).status == 202


def test_slow_responses(fresh_emulator: Any) -> None:
    emu = fresh_emulator(faults={"rate_slow": 1.0, "slow_seconds": 0.3})
    t0 = time.monotonic()
    assert create(emu).status == 202
    assert time.monotonic() - t0 >= 0.3
    assert emu.stats()["faults"]["slow"] == 1


def test_failed_after_acceptance(fresh_emulator: Any) -> None:
    emu = fresh_emulator(faults={"rate_fail": 1.0})
    done = sample(emu)
    assert done["status"] == "failed"
    assert done["error"]["code"] == "server_error"
    assert done["error"]["message"]
    assert done["output"] == []
    s = emu.stats()
    assert (s["failures"], s["faults"]["fail"]) == (1, 1)


def test_polls_are_faulted_and_apply_to_is_configurable(fresh_emulator: Any) -> None:
    emu = fresh_emulator()
    rid = create(emu).json["id"]
    emu.update(faults={"rate_500": 1.0})
    assert poll(emu, rid).status == 500
    assert call(emu, "GET", "/v1/models").status == 200
    emu.update(faults={"apply_to": ["create"]})
    assert poll(emu, rid).status == 200
    assert create(emu).status == 500
    emu.update(faults={"apply_to": ["completions"]})
    assert call(emu, "POST", "/v1/completions", {"model": MODEL, "prompt": [1]}).status == 500
    emu.update(faults=False)
    assert create(emu).status == 202 and poll(emu, rid).status == 200


def test_fault_rates_are_seeded_and_roughly_honoured(fresh_emulator: Any) -> None:
    def run(seed: int) -> list[int]:
        emu = fresh_emulator(seed=seed, faults={"rate_503": 0.3, "rate_429": 0.1, "retry_after_seconds": 0})
        codes = [poll(emu, "resp_0000000000000001").status for _ in range(400)]
        emu.close()
        return codes

    a = run(11)
    assert a == run(11)
    assert 0.2 < a.count(503) / 400 < 0.4
    assert 0.04 < a.count(429) / 400 < 0.17


# --- stats -----------------------------------------------------------------------------------


def test_stats_endpoint_and_reset(fresh_emulator: Any) -> None:
    emu = fresh_emulator()
    sample(emu)
    r = call(emu, "GET", "/_stats", key=None)
    assert r.status == 200
    s = r.json
    for k in ["creates", "idempotent_replays", "polls", "cancels_received", "cancels_effective", "completions",
              "failures", "by_status", "faults", "in_flight", "duplicate_samples", "requests_total",
              "connections_accepted", "openai_completions"]:
        assert k in s, k
    assert s["creates"] == 1 and s["completions"] == 1 and s["polls"] >= 1
    assert s["by_status"]["202"] == 1
    assert s["connections_accepted"] >= 2
    r = call(emu, "POST", "/_stats/reset", key=None)
    assert r.status == 200
    assert emu.stats()["creates"] == 0
    sample(emu)
    emu.reset_stats()
    assert emu.stats()["completions"] == 0


# --- /v1/completions -------------------------------------------------------------------------


def completion(emu: Emulator, **body: Any) -> Reply:
    body.setdefault("model", MODEL)
    return call(emu, "POST", "/v1/completions", body)


def test_completions_text_prompt(emulator: Emulator) -> None:
    r = completion(emulator, prompt="Hello there", max_tokens=8, temperature=0.5, top_p=0.9, stop=["\n\n"])
    assert r.status == 200, r
    assert r.json["object"] == "text_completion"
    ch = r.json["choices"][0]
    assert isinstance(ch["text"], str)
    assert ch["finish_reason"] in ("stop", "length")
    assert ch["logprobs"] is None
    assert r.json["usage"]["prompt_tokens"] == 11
    assert r.json["usage"]["total_tokens"] == 11 + r.json["usage"]["completion_tokens"]


def test_completions_token_ids_and_logprobs(emulator: Emulator) -> None:
    r = completion(emulator, prompt=[72, 105, 32], max_tokens=10, logprobs=1, seed=3,
                   return_token_ids=True, return_tokens_as_token_ids=True, stop_token_ids=[256])
    assert r.status == 200, r
    ch = r.json["choices"][0]
    assert ch["prompt_token_ids"] == [72, 105, 32]
    assert len(ch["token_ids"]) == r.json["usage"]["completion_tokens"]
    assert ch["logprobs"]["tokens"] == [f"token_id:{t}" for t in ch["token_ids"]]
    assert len(ch["logprobs"]["token_logprobs"]) == len(ch["token_ids"])
    assert all(lp <= 0 for lp in ch["logprobs"]["token_logprobs"])
    # Same seed, same tokens.
    again = completion(emulator, prompt=[72, 105, 32], max_tokens=10, seed=3, return_token_ids=True)
    assert again.json["choices"][0]["token_ids"] == ch["token_ids"]


def test_completions_plain_logprobs_tokens_are_text(emulator: Emulator) -> None:
    r = completion(emulator, prompt="abc", max_tokens=6, logprobs=0, seed=1)
    lp = r.json["choices"][0]["logprobs"]
    assert all(isinstance(t, str) and not t.startswith("token_id:") for t in lp["tokens"])
    assert lp["top_logprobs"] is None


def test_completions_length_finish(emulator: Emulator) -> None:
    r = completion(emulator, prompt=[65], max_tokens=1, seed=0, return_token_ids=True)
    ch = r.json["choices"][0]
    assert ch["finish_reason"] == ("stop" if ch["token_ids"] == [256] else "length")


def test_completions_tinker_sampler_paths(emulator: Emulator) -> None:
    name = "tinker://3f2c-run/sampler_weights/000120"
    r = completion(emulator, model=name, prompt=[1, 2], max_tokens=3)
    assert r.status == 200
    assert r.json["model"] == name
    r = completion(emulator, model="tinker://3f2c-run/weights/000120", prompt=[1, 2])
    assert r.status == 400
    assert r.error["param"] == "model"
    assert "sampler_weights" in r.error["message"] and "training" in r.error["message"]
    assert completion(emulator, model="tinker://garbage", prompt=[1]).status == 400


@pytest.mark.parametrize(
    "body, param",
    [
        ({"model": "nope", "prompt": [1]}, "model"),
        ({"prompt": None}, "prompt"),
        ({"prompt": []}, "prompt"),
        ({"prompt": [-1]}, "prompt"),
        ({"prompt": ["a", "b"]}, "prompt"),
        ({"prompt": [1], "max_tokens": 0}, "max_tokens"),
        ({"prompt": [1], "temperature": 9}, "temperature"),
        ({"prompt": [1], "top_p": 2}, "top_p"),
        ({"prompt": [1], "logprobs": 50}, "logprobs"),
        ({"prompt": [1], "n": 3}, "n"),
        ({"prompt": [1], "stream": True}, "stream"),
        ({"prompt": [1], "stop_token_ids": [-3]}, "stop_token_ids"),
    ],
)
def test_completions_validation(emulator: Emulator, body: dict[str, Any], param: str) -> None:
    if body.get("prompt", 0) is None:
        del body["prompt"]
    r = completion(emulator, **body)
    assert r.status == 400, r
    assert r.error["param"] == param


def test_completions_with_the_openai_sdk_if_installed(emulator: Emulator) -> None:
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=emulator.openai_base_url, api_key=emulator.api_key, max_retries=0)
    out = client.completions.create(model=MODEL, prompt="The", max_tokens=5, logprobs=1)
    assert out.choices[0].finish_reason in ("stop", "length")
    assert len(out.choices[0].logprobs.tokens) == out.usage.completion_tokens


# --- concurrency and scale -------------------------------------------------------------------


def test_many_clients_at_once(fresh_emulator: Any) -> None:
    emu = fresh_emulator()

    def one(i: int) -> str:
        return sample(emu, metadata={"seed": str(i)})["status"]

    with ThreadPoolExecutor(32) as pool:
        statuses = list(pool.map(one, range(400)))
    assert statuses == ["completed"] * 400
    s = emu.stats()
    assert s["creates"] == 400 and s["completions"] == 400 and s["in_flight"] == 0


def test_thousands_queued_then_cancelled(fresh_emulator: Any) -> None:
    emu = fresh_emulator(latency={"windows": {"flex": 600}})
    body = json.dumps(create_body(metadata={"completion_window": "flex"})).encode()
    headers = {"Authorization": f"Bearer {emu.api_key}", "Content-Type": "application/json"}
    ids: list[str] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", emu.port, timeout=30)
        mine = []
        for _ in range(n):
            conn.request("POST", "/v1/responses", body, headers)
            r = conn.getresponse()
            assert r.status == 202
            mine.append(json.loads(r.read())["id"])
        conn.close()
        with lock:
            ids.extend(mine)

    threads = [threading.Thread(target=worker, args=(1250,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == 5000
    s = emu.stats()
    assert s["in_flight"] == 5000 and s["queued"] == 5000
    for rid in ids[:50]:
        assert call(emu, "POST", f"/v1/responses/{rid}/cancel").json["status"] == "cancelled"
    assert emu.stats()["in_flight"] == 4950
    t0 = time.monotonic()
    emu.close()
    assert time.monotonic() - t0 < 5
