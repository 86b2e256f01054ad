"""Sampling scopes in one process, against the in-process emulator: derived keys make
identical requests distinct samples within a scope, a rerun of a scope replays its samples
(no new inference), keys are stable across interpreters, reveal nothing secret, and a
scoped sample whose stored response is gone is created again."""

from __future__ import annotations

import asyncio
import gc
import json
import subprocess
import sys
import urllib.request

import pytest

import sail_lite
from reliability_helpers import MODEL, sail_completer, wait_until
from sail_lite import scope
from sail_lite.errors import SailArgumentError

PROMPT = list(b"the same prompt: ")


def sample_many(completer, prompts, scope_name=None):
    async def run():
        if scope_name is None:
            return await asyncio.gather(*(completer(p) for p in prompts))
        handle = scope_name if isinstance(scope_name, scope.SamplingScope) else sail_lite.sampling_scope(scope_name)
        with handle:
            return await asyncio.gather(*(completer(p) for p in prompts))

    return [tuple(s.tokens) for s in asyncio.run(run())]


def test_identical_prompts_in_one_scope_are_distinct_samples_and_a_rerun_replays_them(fresh_emulator):
    emu = fresh_emulator()
    completer = sail_completer(emu)
    first = sample_many(completer, [PROMPT] * 8, "group-scope")
    assert emu.stats()["creates"] == 8 and emu.stats()["idempotent_replays"] == 0
    assert len(set(first)) > 1, "8 distinct samples (random seeds), not one sample 8 times"
    # A rerun of the scope (its earlier handles are gone): the same 8 samples, no inference.
    again = sample_many(completer, [PROMPT] * 8, "group-scope")
    stats = emu.stats()
    assert stats["creates"] == 8 and stats["idempotent_replays"] == 8
    assert sorted(again) == sorted(first)


def test_the_same_prompt_in_two_scopes_is_two_samples(fresh_emulator):
    emu = fresh_emulator()
    completer = sail_completer(emu)
    sample_many(completer, [PROMPT], "scope-a")
    sample_many(completer, [PROMPT], "scope-b")
    assert emu.stats()["creates"] == 2 and emu.stats()["idempotent_replays"] == 0
    # Without a scope every call is a new sample, as before.
    sample_many(completer, [PROMPT, PROMPT])
    assert emu.stats()["creates"] == 4 and emu.stats()["idempotent_replays"] == 0


def test_the_completer_default_scope_and_tasks_inherit_the_with_block(fresh_emulator):
    emu = fresh_emulator()
    scoped = sail_completer(emu, sampling_scope="default-scope")
    assert scoped.sampling_scope.name == "default-scope" and "default-scope" in repr(scoped)
    sample_many(scoped, [PROMPT] * 3)
    # While a holder of the scope lives, its counters go on: 3 more identical requests are new samples.
    sample_many(sail_completer(emu, sampling_scope="default-scope"), [PROMPT] * 3)
    assert emu.stats()["creates"] == 6 and emu.stats()["idempotent_replays"] == 0
    # A rerun (a fresh process, here: every holder gone) asks again and gets the stored 6.
    del scoped
    gc.collect()
    sample_many(sail_completer(emu, sampling_scope="default-scope"), [PROMPT] * 6)
    assert emu.stats()["creates"] == 6 and emu.stats()["idempotent_replays"] == 6

    plain = sail_completer(emu)

    async def tasks_created_inside():
        with sail_lite.sampling_scope("task-scope"):
            assert sail_lite.current_scope().name == "task-scope"
            tasks = [asyncio.create_task(plain(PROMPT)) for _ in range(2)]
        assert sail_lite.current_scope() is None
        return await asyncio.gather(*tasks)

    asyncio.run(tasks_created_inside())
    asyncio.run(tasks_created_inside())
    assert emu.stats()["creates"] == 8 and emu.stats()["idempotent_replays"] == 8


def test_a_scope_on_asap_is_a_clear_error(emulator):
    with pytest.raises(SailArgumentError, match="sampling_scope.*asap"):
        sail_completer(emulator, completion_window="asap", sampling_scope="s")
    asap = sail_completer(emulator, completion_window="asap")

    async def scoped_call():
        with sail_lite.sampling_scope("s"):
            await asap(PROMPT)

    with pytest.raises(SailArgumentError, match="sampling_scope"):
        asyncio.run(scoped_call())
    with pytest.raises(SailArgumentError, match="sampling_scope"):
        sail_lite.sampling_scope("")


def fingerprint(**overrides):
    args = dict(model=MODEL, completion_window="priority", prompt_tokens=[1, 2, 3], max_tokens=8, temperature=1.0, top_p=1.0)
    args.update(overrides)
    return scope.request_fingerprint(**args)


def test_everything_that_defines_a_sample_changes_the_fingerprint_and_a_signature_does_not():
    base = fingerprint()
    for change in [
        {"model": "other"}, {"completion_window": "flex"}, {"prompt_tokens": [1, 2, 4]}, {"max_tokens": 9},
        {"temperature": 0.5}, {"top_p": 0.9}, {"stop": ["\n"]}, {"stop": [13]}, {"metadata": {"seed": "1"}},
        {"lora": "style-a"}, {"request_logprobs": False},
    ]:
        assert fingerprint(**change) != base, change
    signed = "https://user:pw@storage.example/ckpt/step-5.tar?X-Signature=SECRET1&exp=1"
    resigned = "https://storage.example/ckpt/step-5.tar?X-Signature=SECRET2&exp=2"
    assert fingerprint(lora=signed) == fingerprint(lora=resigned)
    assert fingerprint(lora=signed) != fingerprint(lora="https://storage.example/ckpt/step-6.tar?X-Signature=SECRET1")
    # Metadata order does not matter; a signed URL inside metadata is stripped the same way.
    assert fingerprint(metadata={"a": "1", "b": "2"}) == fingerprint(metadata={"b": "2", "a": "1"})
    assert fingerprint(metadata={"lora": signed}) == fingerprint(lora=resigned)

    key = scope.idempotency_key_for(sail_lite.sampling_scope("/home/alice/runs/secret-project step 7"), fingerprint(lora=signed))
    assert len(key) <= 255 and key.isascii() and key.isprintable() and " " not in key
    for secret in ("SECRET", "alice", "secret-project", "pw", "storage"):
        assert secret not in key


KEYS_CHILD = r"""
import json, sys
import sail_lite
from sail_lite import scope
keep = sail_lite.sampling_scope("stable-scope")
out = []
for i in range(3):
    for meta in ({"seed": "1", "user": "x"}, {"user": "x", "seed": "1"}):
        fp = scope.request_fingerprint(model="m", completion_window="priority", prompt_tokens=[i, 7, 2**31 - 1],
            max_tokens=16, temperature=0.7, top_p=0.95, stop=["\n\n"], metadata=meta,
            lora="https://h.example/a/b.tar?sig=" + sys.argv[1])
        out.append(keep.idempotency_key(fp))
print(json.dumps(out))
"""


def test_keys_are_stable_across_interpreters():
    runs = []
    for seed, signature in (("1", "AAA"), ("987654", "BBB")):
        env = {"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin"}
        out = subprocess.run([sys.executable, "-c", KEYS_CHILD, signature], capture_output=True, text=True, env=env, timeout=120)
        assert out.returncode == 0, out.stderr
        runs.append(json.loads(out.stdout))
    assert runs[0] == runs[1]
    keys = runs[0]
    # Same request again in the scope: the next occurrence, k = 2.
    assert keys[0].endswith("-1") and keys[1].endswith("-2") and keys[0][:-2] == keys[1][:-2]
    assert len(set(keys)) == len(keys)


def test_occurrence_counters_are_thread_safe():
    handle = sail_lite.sampling_scope("threads-scope")
    fp = fingerprint()
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        keys = list(pool.map(lambda _: handle.idempotency_key(fp), range(2000)))
    assert sorted(int(k.rsplit("-", 1)[1]) for k in keys) == list(range(1, 2001))


def test_a_scoped_sample_whose_stored_response_is_gone_is_created_again(fresh_emulator, tmp_path):
    log = tmp_path / "requests.jsonl"
    emu = fresh_emulator(latency={"scale": 4.0, "jitter": 0.0}, request_log=str(log))
    completer = sail_completer(emu)
    n = 5
    before = sail_lite.engine_metrics()["samples_recreated"]

    async def run():
        with sail_lite.sampling_scope("gone-scope"):
            tasks = [asyncio.create_task(completer(list(f"gone {i}".encode()))) for i in range(n)]
        assert await asyncio.to_thread(wait_until, lambda: emu.stats()["creates"] == n, 60)

        def created_ids():
            lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
            return {line["response_id"] for line in lines if line["method"] == "POST" and line["path"] == "/v1/responses" and line["response_id"]}

        assert await asyncio.to_thread(wait_until, lambda: len(created_ids()) == n, 60)
        for rid in created_ids():  # the stored responses vanish (as after Sail's retention)
            req = urllib.request.Request(f"{emu.base_url}/v1/responses/{rid}", method="DELETE",
                                         headers={"Authorization": f"Bearer {emu.api_key}"})
            urllib.request.urlopen(req, timeout=30).read()
        return await asyncio.gather(*tasks)

    results = asyncio.run(run())
    assert len(results) == n and all(r.tokens for r in results)
    assert sail_lite.engine_metrics()["samples_recreated"] - before == n
    stats = emu.stats()
    assert stats["creates"] == 2 * n and stats["duplicate_samples"] == 0


def test_a_rerun_with_a_re_signed_lora_url_creates_its_samples_again(fresh_emulator):
    """The key leaves a signed URL's signature out, but Sail compares request bodies: a rerun
    whose checkpoint URL was signed again gets 400 idempotency_error, so the sample is created
    again under a fresh derived key (counted), never a failed sample."""
    from test_emulator_lora import adapter_config, archive

    emu = fresh_emulator()
    data = archive(8, 7)
    first_url = emu.add_tinker_archive("run-1/sampler_weights/000080", data, ttl_seconds=600)
    second_url = emu.add_tinker_archive("run-1/sampler_weights/000080", data, ttl_seconds=900)
    assert first_url != second_url and first_url.split("?")[0] == second_url.split("?")[0]
    before = sail_lite.engine_metrics()["samples_recreated"]

    def completer(url):
        return sail_completer(emu, tinker_lora_signed_url=url, adapter_config=adapter_config(8))

    sample_many(completer(first_url), [PROMPT] * 2, "lora-scope")
    sample_many(completer(first_url), [PROMPT] * 2, "lora-scope")
    assert emu.stats()["creates"] == 2 and emu.stats()["idempotent_replays"] == 2
    sample_many(completer(second_url), [PROMPT] * 2, "lora-scope")
    stats = emu.stats()
    assert stats["idempotency_conflicts"] == 2 and stats["creates"] == 4
    assert sail_lite.engine_metrics()["samples_recreated"] - before == 2


def test_a_journal_re_attaches_a_rerun_whose_lora_was_exported_again(fresh_emulator, tmp_path):
    """A resumed training run exports its weights again: a new path and a new signature, so
    Sail would refuse the scope's keys (another body). With ``lora_in_key=False`` the keys stay
    the same, and the journal names the responses: the rerun polls them, and nothing is created."""
    from test_emulator_lora import adapter_config, archive

    emu = fresh_emulator()
    data = archive(8, 7)
    first_url = emu.add_tinker_archive("run-1/sampler_weights/000003", data, ttl_seconds=600)
    resumed_url = emu.add_tinker_archive("run-2/sampler_weights/000003", data, ttl_seconds=600)
    journal = tmp_path / "step-3.journal"
    metrics = sail_lite.engine_metrics

    def run(url):
        completer = sail_completer(emu, tinker_lora_signed_url=url, adapter_config=adapter_config(8))
        handle = sail_lite.sampling_scope("run/step-3", journal=journal, lora_in_key=False)
        return sample_many(completer, [PROMPT] * 3 + [list(b"another prompt")], handle)

    before = metrics()
    first = run(first_url)
    assert emu.stats()["creates"] == 4
    assert len(journal.read_text().splitlines()) == 4, "one line per accepted create"
    again = run(resumed_url)
    stats, after = emu.stats(), metrics()
    assert stats["creates"] == 4 and stats["idempotency_conflicts"] == 0 and stats["idempotent_replays"] == 0
    assert after["samples_reattached"] - before["samples_reattached"] == 4
    assert after["samples_recreated"] == before["samples_recreated"]
    assert sorted(again) == sorted(first)
    # Without the journal the same rerun could not re-attach: Sail refuses the keys' new bodies.
    completer = sail_completer(emu, tinker_lora_signed_url=resumed_url, adapter_config=adapter_config(8))
    sample_many(completer, [PROMPT], sail_lite.sampling_scope("run/step-3", lora_in_key=False))
    assert emu.stats()["idempotency_conflicts"] == 1


def test_a_journalled_response_that_is_gone_is_created_again_once(fresh_emulator, tmp_path):
    emu = fresh_emulator()
    completer = sail_completer(emu)
    journal = tmp_path / "gone.journal"
    first = sample_many(completer, [PROMPT] * 2, sail_lite.sampling_scope("gone-journal", journal=journal))
    for line in journal.read_text().splitlines():  # the stored responses vanish (Sail's retention)
        rid = line.split("\t")[1]
        req = urllib.request.Request(f"{emu.base_url}/v1/responses/{rid}", method="DELETE",
                                     headers={"Authorization": f"Bearer {emu.api_key}"})
        urllib.request.urlopen(req, timeout=30).read()
    before = sail_lite.engine_metrics()
    again = sample_many(completer, [PROMPT] * 2, sail_lite.sampling_scope("gone-journal", journal=journal))
    after = sail_lite.engine_metrics()
    assert len(again) == 2 and all(again) and sorted(again) != sorted(first)
    assert after["samples_reattached"] - before["samples_reattached"] == 2
    assert after["samples_recreated"] - before["samples_recreated"] == 2
    stats = emu.stats()
    assert stats["creates"] == 4 and stats["duplicate_samples"] == 0
    # The journal now names the new responses: a third run re-attaches to them.
    third = sample_many(completer, [PROMPT] * 2, sail_lite.sampling_scope("gone-journal", journal=journal))
    assert sorted(third) == sorted(again) and emu.stats()["creates"] == 4


def test_a_journal_with_torn_or_hostile_lines_is_read_safely(fresh_emulator, tmp_path):
    log = tmp_path / "requests.jsonl"
    emu = fresh_emulator(request_log=str(log))
    completer = sail_completer(emu)
    journal = tmp_path / "hostile.journal"
    first = sample_many(completer, [PROMPT], sail_lite.sampling_scope("hostile-journal", journal=journal))
    key = journal.read_text().split("\t")[0]
    # The key's id now traverses paths, and a torn line follows (a crash mid-write).
    journal.write_bytes(f"{key}\t../../admin\n{key}\tresp_torn".encode())
    before = sail_lite.engine_metrics()
    again = sample_many(completer, [PROMPT], sail_lite.sampling_scope("hostile-journal", journal=journal))
    after = sail_lite.engine_metrics()
    # The id stays one path segment (polled as such, never /v1/admin): the server knows no such
    # response, so the sample counts as gone and is created again, once. The torn line is ignored.
    assert wait_until(lambda: '"/v1/responses/..%2F..%2Fadmin"' in log.read_text(), 60), "the request log names the poll"
    assert '"/v1/admin"' not in log.read_text() and "resp_torn" not in log.read_text()
    assert len(again) == 1 and emu.stats()["creates"] == 2
    assert after["samples_recreated"] - before["samples_recreated"] == 1
    # The torn line was ended before the new record: a third run re-attaches to the new sample.
    third = sample_many(completer, [PROMPT], sail_lite.sampling_scope("hostile-journal", journal=journal))
    assert third == again and emu.stats()["creates"] == 2


def test_bad_journal_arguments_are_typed_errors(tmp_path):
    with pytest.raises(SailArgumentError, match="journal"):
        sail_lite.sampling_scope("j", journal=tmp_path / "missing-dir" / "x.journal")
    with pytest.raises(SailArgumentError, match="journal"):
        sail_lite.sampling_scope("j", journal=42)  # type: ignore[arg-type]
    with pytest.raises(SailArgumentError, match="lora_in_key"):
        sail_lite.sampling_scope("j", lora_in_key="no")  # type: ignore[arg-type]
    # One journal object per path while it is held, so keys recorded by one scope are seen by all.
    a = sail_lite.sampling_scope("j1", journal=tmp_path / "shared.journal")
    b = sail_lite.sampling_scope("j2", journal=str(tmp_path / "shared.journal"))
    assert a.journal is b.journal and "shared.journal" in repr(a)
