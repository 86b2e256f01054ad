"""The real ``tinker_cookbook.rl.train.main`` runs on Sail through ``sail_lite.cookbook.sample_on_sail``.

Training goes through the real tinker SDK to :class:`TinkerTrainingDouble` (a loopback test
double of Tinker's training service, which cannot run here); every rollout sample goes through
sail-lite to the emulator, via a wire recorder that keeps each create exactly as sent. The same
run is repeated with the cookbook's two scale-out hooks: a spawn process pool and a Ray executor
on a local Ray cluster (127.0.0.1).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import textwrap
from concurrent.futures import ProcessPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest
import tinker

import sail_lite
from sail_lite.cookbook import sample_on_sail
from sail_lite.emulator import Emulator
from tinker_training_double import TinkerTrainingDouble, arithmetic_train_config, run_rl_train
from wire_recorder import WireRecorder

SAIL_MODEL = "sail-lite/byte-ngram"
STEPS = 3
GROUPS = 2
GROUP_SIZE = 2
LORA_RANK = 4


@pytest.fixture(scope="module")
def emu():
    with Emulator(latency=0) as e:
        yield e


@pytest.fixture
def double():
    with TinkerTrainingDouble() as d:
        yield d


@pytest.fixture
def worker_env(monkeypatch, emu, double):
    """What rollout workers read from their environment (secrets never travel with tasks)."""
    monkeypatch.setenv("SAIL_API_KEY", emu.api_key)
    monkeypatch.setenv("TINKER_BASE_URL", double.base_url)
    monkeypatch.setenv("TINKER_API_KEY", double.api_key)


def run_on_sail(emu: Emulator, double: TinkerTrainingDouble, log_path: str, *, rollout_executor: Any = None,
                **config_overrides: Any) -> tuple[Any, WireRecorder, int]:
    """rl.train.main for STEPS steps inside sample_on_sail; returns (installation, wire, emulator samples)."""
    before = emu.stats()["completions"]
    config = arithmetic_train_config(base_url=double.base_url, log_path=log_path, steps=STEPS,
                                     groups_per_batch=GROUPS, group_size=GROUP_SIZE, lora_rank=LORA_RANK,
                                     **config_overrides)
    with WireRecorder(emu.base_url) as wire, sample_on_sail(model=SAIL_MODEL, completion_window="priority",
                                                            base_url=wire.base_url, api_key=emu.api_key) as inst:
        run_rl_train(double, config, rollout_executor=rollout_executor)
    return inst, wire, emu.stats()["completions"] - before


def check_run(emu: Emulator, double: TinkerTrainingDouble, inst: Any, wire: WireRecorder, served: int,
              *, synchronous: bool = True) -> None:
    # Nothing was sampled on Tinker: its sampler was never asked.
    assert double.sample_requests == []
    creates = wire.creates()
    # Every sample the loop used came from the emulator: one create and one completed response each.
    assert served == len(creates) >= STEPS * GROUPS * GROUP_SIZE
    assert len(double.optim_steps) == STEPS

    # One export per sampler the loop asked for (in the synchronous mode, STEPS + the one after the
    # last step), each a real external_weights checkpoint on the double with the TTL sample_on_sail
    # asked for, holding the weights after that many optimizer steps.
    assert len(inst.exports) == STEPS + 1 if synchronous else len(inst.exports) >= 2
    for i, export in enumerate(inst.exports):
        record = double.checkpoints[export.tinker_path]
        assert record.optim_steps_before == i, "export i holds the weights after i optimizer steps"
        assert "/external_weights/" in export.tinker_path and record.ttl_seconds == 3 * 3600
        assert export.adapter_config["r"] == LORA_RANK

    # Each step's creates carry that step's checkpoint URL and adapter config, in step order.
    export_index = {urlsplit(e.tinker_path).path.rsplit("/", 1)[-1]: i for i, e in enumerate(inst.exports)}
    used = []
    for body in creates:
        meta = body.json()["metadata"]
        assert meta["completion_window"] == "priority"
        assert json.loads(meta["tinker_adapter_config"])["r"] == LORA_RANK
        name = next(n for n in export_index if f"/{n}/adapter_model.safetensors" in meta["lora"])
        used.append(export_index[name])
    if synchronous:
        assert used == sorted(used), "a later step never samples from an earlier step's weights"
        assert set(used) == set(range(STEPS)), "each step sampled from its own export"
        assert [used.count(i) for i in range(STEPS)] == [GROUPS * GROUP_SIZE] * STEPS
    else:
        assert 0 in used and len(set(used)) >= 2, "rollouts moved on to newer weights"
    # Sail (the emulator) downloaded the weights of every export it sampled from.
    downloaded = {path for path, filename, status in double.downloads if status == 200}
    assert {inst.exports[i].tinker_path for i in set(used)} <= downloaded

    # The tokens and logprobs Tinker trained on are the ones Sail returned.
    samples = [response_sample(emu, rid) for rid in polled_response_ids(wire)]
    assert len(samples) == served
    datums = [d for call in double.forward_backward_calls for d in call.data]
    assert datums, "the loop trained on something"
    for d in datums:
        targets = [int(t) for t in d.get("target_tokens")]
        logprobs = np.asarray(d.get("logprobs"), dtype=np.float32)
        assert any(matches(targets, logprobs, tokens, lps) for tokens, lps in samples), "datum from a Sail sample"


def polled_response_ids(wire: WireRecorder) -> list[str]:
    ids = {r.path.rsplit("/", 1)[-1] for r in wire.requests if r.method == "GET" and r.path.startswith("/v1/responses/")}
    return sorted(ids)


def response_sample(emu: Emulator, response_id: str) -> tuple[list[int], np.ndarray]:
    import urllib.request

    req = urllib.request.Request(f"{emu.base_url}/v1/responses/{response_id}",
                                 headers={"Authorization": f"Bearer {emu.api_key}"})
    with urllib.request.urlopen(req, timeout=30) as answer:
        body = json.load(answer)
    block = next(c for item in body["output"] if item["type"] == "message" for c in item["content"])
    return block["token_ids"], np.asarray([lp["logprob"] for lp in block["logprobs"]], dtype=np.float32)


def matches(targets: list[int], logprobs: np.ndarray, tokens: list[int], lps: np.ndarray) -> bool:
    """The sample is the datum's action: its tokens end the targets, with the same logprobs."""
    n = len(tokens)
    if n == 0 or n > len(targets) or targets[-n:] != tokens:
        return False
    return bool(np.allclose(logprobs[-n:], lps, atol=1e-6))


def test_rl_train_main_samples_every_rollout_on_sail(emu, double, worker_env, tmp_path):
    inst, wire, served = run_on_sail(emu, double, str(tmp_path))
    check_run(emu, double, inst, wire, served)


def test_periodic_checkpoints_take_the_create_sampling_client_path(emu, double, worker_env, tmp_path):
    """With save_every=2 the loop samples step 2 from a named sampler checkpoint
    (create_sampling_client) instead of save_weights_and_get_sampling_client."""
    inst, wire, served = run_on_sail(emu, double, str(tmp_path), save_every=2)
    check_run(emu, double, inst, wire, served)
    assert [e.label for e in inst.exports].count("000002") == 1


@pytest.mark.parametrize(
    "mode",
    [
        {"async_config": "AsyncConfig(max_steps_off_policy=1, groups_per_batch=GROUPS, loss_fn='importance_sampling')"},
        {"stream_minibatch_config": "StreamMinibatchConfig(groups_per_batch=GROUPS, num_minibatches=2)"},
    ],
    ids=["async-off-policy", "stream-minibatch"],
)
def test_other_loop_modes(emu, double, worker_env, tmp_path, mode):
    from tinker_cookbook.rl import train

    overrides = {key: eval(value, {**vars(train), "GROUPS": GROUPS}) for key, value in mode.items()}
    inst, wire, served = run_on_sail(emu, double, str(tmp_path), **overrides)
    check_run(emu, double, inst, wire, served, synchronous=False)


def test_spawn_process_pool(emu, double, worker_env, tmp_path):
    with ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn")) as pool:
        inst, wire, served = run_on_sail(emu, double, str(tmp_path), rollout_executor=pool)
    check_run(emu, double, inst, wire, served)


def test_ray_executor(emu, double, worker_env, tmp_path):
    from sail_lite.ray_executor import RayExecutor

    executor = RayExecutor(init_kwargs={"num_cpus": 2, "include_dashboard": False, "_node_ip_address": "127.0.0.1"})
    try:
        inst, wire, served = run_on_sail(emu, double, str(tmp_path), rollout_executor=executor)
    finally:
        executor.shutdown()
    check_run(emu, double, inst, wire, served)


def test_options_that_cannot_work_on_sail_fail_before_the_first_step(emu, double, worker_env, tmp_path):
    from tinker_cookbook.rl.train import AsyncConfig

    cases = (
        ({"compute_post_kl": True}, "compute_post_kl"),
        ({"loss_fn": "stable_reinforce"}, "loss_fn"),
        # The async mode's default loss is stable_reinforce.
        ({"async_config": AsyncConfig(max_steps_off_policy=1, groups_per_batch=GROUPS)}, "async_config.loss_fn"),
    )
    for overrides, argument in cases:
        before = len(double.requests)
        with pytest.raises(sail_lite.SailUnsupportedError) as info:
            run_on_sail(emu, double, str(tmp_path / argument), **overrides)
        assert info.value.argument == argument
        assert not [r for r in double.requests[before:] if "forward_backward" in r.path], "no step ran"


def test_hooks_are_removed_on_exit_and_cannot_nest(emu):
    original = tinker.TrainingClient.create_sampling_client
    with sample_on_sail(model=SAIL_MODEL, base_url=emu.base_url, api_key=emu.api_key):
        assert tinker.TrainingClient.create_sampling_client is not original
        with pytest.raises(sail_lite.SailError, match="already active"):
            with sample_on_sail(model=SAIL_MODEL, base_url=emu.base_url, api_key=emu.api_key):
                pass
    assert tinker.TrainingClient.create_sampling_client is original
    with pytest.raises(sail_lite.SailArgumentError, match="completion_window"):
        with sample_on_sail(model=SAIL_MODEL, base_url=emu.base_url, api_key=emu.api_key, completion_window=""):
            pass
    assert tinker.TrainingClient.create_sampling_client is original


def test_cli_runs_a_recipe_module_inside_sample_on_sail(tmp_path, emu):
    """`python -m sail_lite.cookbook <module> [args] --sail-...` runs the module as __main__ with
    its own arguments, the hooks in place."""
    recipe = tmp_path / "tiny_recipe.py"
    recipe.write_text(textwrap.dedent("""
        import sys, tinker, tinker_cookbook.rl.train as train
        from sail_lite.cookbook import exports
        from sail_lite.cookbook._hooks import current
        if __name__ == "__main__":
            hooked = tinker.TrainingClient.create_sampling_client.__name__ == "create_sampling_client" and \\
                hasattr(tinker.TrainingClient.create_sampling_client, "__wrapped__")
            s = current().settings
            print("RECIPE", sys.argv[1:], hooked, s.model, s.completion_window, s.ttl_seconds)
    """))
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "SAIL_API_KEY": emu.api_key}
    out = subprocess.run(
        [sys.executable, "-m", "sail_lite.cookbook", "tiny_recipe", "model_name=x", "--sail-model", SAIL_MODEL,
         "log_path=/tmp/y", "--sail-window=standard", "--sail-ttl", "7200", "--sail-base-url", emu.base_url],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stderr
    assert "RECIPE ['model_name=x', 'log_path=/tmp/y'] True sail-lite/byte-ngram standard 7200" in out.stdout
    missing = subprocess.run([sys.executable, "-m", "sail_lite.cookbook", "tiny_recipe"],
                             env={**env, "SAIL_MODEL": ""}, capture_output=True, text=True, timeout=600)
    assert missing.returncode == 2 and "--sail-model" in missing.stderr


def test_prompt_logprobs_on_tinker_gives_each_step_a_tinker_fallback(emu, double, worker_env):
    """With prompt_logprobs_on_tinker=True the step's client samples on Sail and sends
    compute_logprobs to a real tinker SamplingClient for the same weights (the double's sampler,
    which records the request and refuses it)."""
    service = tinker.ServiceClient(base_url=double.base_url, api_key=double.api_key)
    training = service.create_lora_training_client(base_model="sail-lite/byte-model", rank=LORA_RANK).result()
    with sample_on_sail(model=SAIL_MODEL, base_url=emu.base_url, api_key=emu.api_key, prompt_logprobs_on_tinker=True) as inst:
        client = training.save_weights_and_get_sampling_client().result()
    assert isinstance(client, sail_lite.SailSamplingClient)
    assert client.tinker_path == inst.exports[0].tinker_path
    prompt = tinker.ModelInput.from_ints(list(b"1+1="))
    response = client.sample(prompt, 2, tinker.SamplingParams(max_tokens=3)).result()
    assert len(response.sequences) == 2 and double.sample_requests == []
    with pytest.raises(Exception):  # the double's sampler refuses; what matters is where it went
        client.compute_logprobs(prompt).result()
    assert len(double.sample_requests) == 1
    # Without the option, the same call is a clear error that never reaches Tinker.
    with sample_on_sail(model=SAIL_MODEL, base_url=emu.base_url, api_key=emu.api_key):
        plain = training.save_weights_and_get_sampling_client().result()
    with pytest.raises(sail_lite.SailUnsupportedError, match="prompt logprobs"):
        plain.compute_logprobs(prompt)
    assert len(double.sample_requests) == 1
