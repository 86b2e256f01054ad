"""LoRA end to end on the emulator: a real PEFT tar archive (built here with the standard library),
served as a Tinker-style signed URL by the emulator itself, downloaded, validated and sampled with;
expired, unreachable and bad adapters fail the response with clear codes; signed URLs and the API
key never reach the request log or error messages."""

from __future__ import annotations

import io
import json
import random
import struct
import tarfile
import time
from typing import Any

import pytest

from sail_lite.emulator import Emulator
from emulator_http import MODEL, call, create, create_body, free_port, output_block, wait

HIDDEN = 64


def safetensors(r: int, seed: int, modules: tuple[str, ...] = ("q_proj", "v_proj")) -> bytes:
    """A PEFT adapter_model.safetensors with F32 lora_A [r, 64] / lora_B [64, r] per module."""
    rng = random.Random(seed)
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    data = bytearray()
    for module in modules:
        prefix = f"base_model.model.model.layers.0.self_attn.{module}"
        for name, shape, scale in ((f"{prefix}.lora_A.weight", [r, HIDDEN], 0.125), (f"{prefix}.lora_B.weight", [HIDDEN, r], 0.05)):
            n = shape[0] * shape[1]
            buf = struct.pack(f"<{n}f", *(rng.uniform(-scale, scale) for _ in range(n)))
            header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [len(data), len(data) + len(buf)]}
            data += buf
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + bytes(data)


def adapter_config(r: int, base: str = MODEL) -> str:
    cfg = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": r, "lora_alpha": 2 * r, "lora_dropout": 0.0,
           "bias": "none", "target_modules": ["q_proj", "v_proj"], "base_model_name_or_path": base}
    return json.dumps(cfg, sort_keys=True, separators=(",", ":"))


def archive(r: int, seed: int, *, gzip: bool = False, prefix: str = "") -> bytes:
    """A Tinker-style checkpoint archive (tar or tar.gz) of a PEFT adapter directory."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz" if gzip else "w") as tar:
        for name, blob in (("adapter_config.json", adapter_config(r).encode()), ("adapter_model.safetensors", safetensors(r, seed))):
            info = tarfile.TarInfo(prefix + name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return out.getvalue()


def lora_body(url: str, cfg: str | None = None, **kw: Any) -> dict[str, Any]:
    meta = {"lora": url, "tinker_adapter_config": cfg or adapter_config(8), "tinker_lora_name": "run-1/step-80", "seed": "5"}
    return create_body(metadata=meta, max_output_tokens=24, **kw)


def run(emu: Emulator, body: dict[str, Any]) -> dict[str, Any]:
    r = create(emu, body)
    assert r.status == 202, r
    return wait(emu, r.json["id"], timeout=30)


@pytest.fixture
def emu(fresh_emulator: Any, tmp_path: Any) -> Emulator:
    return fresh_emulator(request_log=str(tmp_path / "requests.jsonl"), api_key="sk-test-secret-key-0042",
                          loras={"named-a": {"rank": 8, "seed": 1}})


def test_signed_url_lora_end_to_end(emu: Emulator) -> None:
    url = emu.add_tinker_archive("run-1/sampler_weights/000080", archive(8, 7, gzip=True, prefix="ckpt/"), ttl_seconds=600)
    assert url.startswith(emu.base_url + "/_tinker/archives/")
    assert "expires=" in url and "signature=" in url
    done = run(emu, lora_body(url))
    assert done["status"] == "completed", done
    assert "signature" not in json.dumps(done)
    base = run(emu, create_body(metadata={"seed": "5"}, max_output_tokens=24))
    assert output_block(done)["token_ids"] != output_block(base)["token_ids"], "the adapter changes the sample"
    # Cached per URL: the second request downloads nothing.
    again = run(emu, lora_body(url))
    assert output_block(again)["token_ids"] == output_block(done)["token_ids"]
    s = emu.stats()
    assert (s["lora_downloads"], s["lora_cache_hits"], s["archive_downloads"]) == (1, 1, 1)


def test_bare_safetensors_url_loads_like_an_archive(emu: Emulator) -> None:
    """tinker 0.38 signs per-file URLs (the bare adapter_model.safetensors), not archives."""
    bare = emu.add_tinker_archive("run-1/external_weights/000080/adapter_model.safetensors", safetensors(8, 7), ttl_seconds=600)
    packed = emu.add_tinker_archive("run-1/sampler_weights/000080", archive(8, 7, gzip=True), ttl_seconds=600)
    from_file = run(emu, lora_body(bare))
    from_archive = run(emu, lora_body(packed))
    assert from_file["status"] == from_archive["status"] == "completed", (from_file, from_archive)
    assert output_block(from_file)["token_ids"] == output_block(from_archive)["token_ids"], "same adapter, same sample"
    base = run(emu, create_body(metadata={"seed": "5"}, max_output_tokens=24))
    assert output_block(from_file)["token_ids"] != output_block(base)["token_ids"], "the adapter is applied"
    # A file that is neither safetensors nor an archive is still a clear adapter error.
    junk = emu.add_tinker_archive("junk.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}", ttl_seconds=600)
    bad = run(emu, lora_body(junk))
    assert bad["status"] == "failed" and bad["error"]["code"] == "invalid_lora_adapter", bad


def test_plain_tar_and_registered_lora(emu: Emulator) -> None:
    url = emu.add_tinker_archive("plain", archive(4, 3), ttl_seconds=600)
    assert run(emu, lora_body(url, adapter_config(4)))["status"] == "completed"
    done = run(emu, create_body(metadata={"lora": "named-a", "seed": "5"}))
    assert done["status"] == "completed"


def test_text_requests_ignore_lora_metadata(emu: Emulator) -> None:
    body = {"model": MODEL, "input": "hi", "max_output_tokens": 3,
            "metadata": {"lora": "https://nowhere.invalid/x.tar?sig=1", "completion_window": "asap"}}
    r = create(emu, body)
    assert r.status == 200 and r.json["status"] == "completed"


def test_expired_url(emu: Emulator) -> None:
    url = emu.add_tinker_archive("old", archive(8, 7), ttl_seconds=0)
    # The archive host refuses it...
    r = call(emu, "GET", "", key=None, url=url)
    assert r.status == 403 and "expired" in r.error["message"]
    # ...and a response using it fails with lora_url_expired.
    done = run(emu, lora_body(url))
    assert done["status"] == "failed"
    assert done["error"]["code"] == "lora_url_expired"
    assert "signature" not in done["error"]["message"]


def test_url_rejected_by_the_host_is_expired(emu: Emulator) -> None:
    url = emu.add_tinker_archive("ok", archive(8, 7), ttl_seconds=600)
    forged = url.replace("signature=", "signature=ff")
    assert call(emu, "GET", "", key=None, url=forged).status == 403
    done = run(emu, lora_body(forged))
    assert done["error"]["code"] == "lora_url_expired"


def test_unreachable_url(emu: Emulator) -> None:
    port = free_port()  # nothing listens there
    done = run(emu, lora_body(f"http://127.0.0.1:{port}/ckpt.tar?expires=99999999999&signature=abc123"))
    assert done["status"] == "failed"
    assert done["error"]["code"] == "lora_url_unreachable"
    assert "abc123" not in done["error"]["message"]
    missing = f"{emu.base_url}/_tinker/archives/none.tar?expires=99999999999&signature=abc123"
    done = run(emu, lora_body(missing))
    assert done["error"]["code"] == "lora_url_unreachable"


def test_archive_host_faults_make_urls_unreachable(emu: Emulator) -> None:
    url = emu.add_tinker_archive("flaky", archive(8, 9), ttl_seconds=600)
    emu.update(faults={"apply_to": ["archives"], "rate_503": 1.0})
    done = run(emu, lora_body(url))
    assert done["error"]["code"] == "lora_url_unreachable"
    emu.update(faults={"rate_503": 0.0})
    assert run(emu, lora_body(url))["status"] == "completed"  # failures are not cached


@pytest.mark.parametrize(
    "data, cfg, words",
    [
        (b"this is not a tar archive", None, "tar"),
        (archive(8, 7), adapter_config(64), "rank"),
        (archive(8, 7), adapter_config(8, base="meta-llama/Llama-3-8B"), "base model"),
        (archive(4, 7), adapter_config(8), "rank"),
    ],
    ids=["not-a-tar", "rank-too-big", "wrong-base", "rank-mismatch"],
)
def test_bad_adapter(emu: Emulator, data: bytes, cfg: str | None, words: str) -> None:
    url = emu.add_tinker_archive("bad", data, ttl_seconds=600)
    done = run(emu, lora_body(url, cfg))
    assert done["status"] == "failed"
    assert done["error"]["code"] == "invalid_lora_adapter"
    assert words in done["error"]["message"]


def test_archive_without_safetensors(emu: Emulator) -> None:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        blob = adapter_config(8).encode()
        info = tarfile.TarInfo("adapter_config.json")
        info.size = len(blob)
        tar.addfile(info, io.BytesIO(blob))
    url = emu.add_tinker_archive("empty", out.getvalue(), ttl_seconds=600)
    done = run(emu, lora_body(url))
    assert done["error"]["code"] == "invalid_lora_adapter"


def test_lora_validation(emu: Emulator) -> None:
    url = emu.add_tinker_archive("v", archive(8, 7), ttl_seconds=600)
    body = lora_body(url)
    body["metadata"]["completion_window"] = "asap"
    r = create(emu, body)
    assert r.status == 400 and r.error["param"] == "metadata.lora"
    assert "signature" not in r.raw.decode()
    body = lora_body(url)
    del body["metadata"]["tinker_adapter_config"]
    r = create(emu, body)
    assert r.status == 400 and r.error["param"] == "metadata.tinker_adapter_config"


def test_secrets_never_reach_the_log(emu: Emulator, tmp_path: Any) -> None:
    url = emu.add_tinker_archive("secret-ckpt", archive(8, 7), ttl_seconds=600)
    expired = emu.add_tinker_archive("secret-old", archive(8, 7), ttl_seconds=0)
    sigs = [u.split("signature=")[1] for u in (url, expired)]
    for u in (url, expired, url.replace("signature=", "signature=00")):
        run(emu, lora_body(u))
        call(emu, "GET", "", key=None, url=u)
    call(emu, "GET", "/v1/models", key="sk-wrong-key-77")
    echoed = run(emu, lora_body(url))
    assert echoed["metadata"]["lora"].endswith("?<redacted>")
    emu.close()  # flushes the log
    log = (tmp_path / "requests.jsonl").read_text()
    lines = [json.loads(line) for line in log.splitlines()]
    assert len(lines) >= 10
    assert {"method", "path", "status", "response_id", "latency_ms", "fault"} <= set(lines[0])
    for secret in [emu.api_key, "sk-wrong-key-77", "signature", "expires=", *sigs]:
        assert secret not in log, secret
    assert any(line["path"].startswith("/_tinker/archives/") for line in lines)
    assert any(line["response_id"] for line in lines)


def test_expiry_of_archives_is_real_time(emu: Emulator) -> None:
    # No upper bound on how soon we look: a long-lived URL serves, a short-lived one is
    # refused once its TTL has passed (a lower bound on the wait).
    lasting = emu.add_tinker_archive("lasting", archive(8, 7), ttl_seconds=3600)
    url = emu.add_tinker_archive("short", archive(8, 7), ttl_seconds=0.5)
    time.sleep(0.6)
    assert call(emu, "GET", "", key=None, url=lasting).status == 200
    assert call(emu, "GET", "", key=None, url=url).status == 403
