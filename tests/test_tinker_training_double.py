"""The real tinker 0.38 SDK (and tinker-cookbook 0.6.1's ``rl.train.main``) against
``tinker_training_double.TinkerTrainingDouble``, a loopback double of the Tinker training service.

What the double recorded is asserted, so the double can serve as the Tinker side of end-to-end
tests (issue 15) with confidence that it speaks what the SDK sends and accepts what it returns.
"""

from __future__ import annotations

import asyncio
import json
import struct
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

tinker = pytest.importorskip("tinker")
from tinker import types  # noqa: E402

from tinker_training_double import (  # noqa: E402
    API_KEY,
    DEFAULT_BASE_MODEL,
    SAMPLING_REFUSED,
    TinkerTrainingDouble,
    arithmetic_train_config,
    run_rl_train,
)

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


@pytest.fixture
def double():
    with TinkerTrainingDouble() as d:
        yield d


@pytest.fixture
def service(double):
    client = tinker.ServiceClient(base_url=double.base_url, api_key=API_KEY)
    yield client
    client.close("success").result()


def _datum(prompt: list[int], sampled: list[int], logprobs: list[float], advantage: float) -> types.Datum:
    # The cookbook's layout: model input is prompt + sampled[:-1], targets are shifted by one.
    tokens = prompt + sampled
    n = len(tokens) - 1
    pad = len(prompt) - 1
    return types.Datum(
        model_input=types.ModelInput.from_ints(tokens[:-1]),
        loss_fn_inputs={
            "target_tokens": tokens[1:],
            "logprobs": [0.0] * pad + logprobs,
            "advantages": [0.0] * pad + [advantage] * (n - pad),
        },
    )


def _read_safetensors(data: bytes) -> dict[str, Any]:
    (header_len,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + header_len])


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "zstd"])
def test_lora_run_forward_backward_and_optim_step_are_recorded_as_sent(compress):
    with TinkerTrainingDouble(client_config={"proto_compress_fwdbwd": compress}) as double:
        service = tinker.ServiceClient(base_url=double.base_url, api_key=API_KEY)
        _check_lora_run(double, service, compress)
        service.close("success").result()


def _check_lora_run(double: TinkerTrainingDouble, service: Any, compress: bool) -> None:
    training = service.create_lora_training_client(DEFAULT_BASE_MODEL, rank=4).result()
    run = double.training_runs[training.model_id]
    assert (run.base_model, run.lora_rank) == (DEFAULT_BASE_MODEL, 4)
    assert run.lora_config["train_mlp"] is True
    assert training.get_info().lora_rank == 4

    data = [
        _datum([81, 58], [49, 50, 10], [-0.5, -0.25, -1.5], 1.0),
        _datum([81, 58, 32], [55, 10], [-2.0, -0.125], -0.5),
    ]
    fwd = training.forward_backward(data, "importance_sampling")
    optim = training.optim_step(types.AdamParams(learning_rate=3e-4))
    output = fwd.result()
    optim.result()

    (call,) = double.forward_backward_calls
    assert call.loss_fn == "importance_sampling" and not call.forward_only
    assert call.compressed is compress
    assert call.model_id == training.model_id
    for sent, got in zip(data, call.data, strict=True):
        assert got.tokens == sent.model_input.to_ints()
        assert got.get("target_tokens") == sent.loss_fn_inputs["target_tokens"].tolist()
        assert got.get("logprobs") == pytest.approx(sent.loss_fn_inputs["logprobs"].tolist())
        assert got.get("advantages") == pytest.approx(sent.loss_fn_inputs["advantages"].tolist())
    # The proto answer decodes into one logprobs tensor per datum (the sampler's, echoed).
    # (The test values are exact in float32.)
    assert [o["logprobs"].tolist() for o in output.loss_fn_outputs] == [
        d.loss_fn_inputs["logprobs"].tolist() for d in data
    ]
    assert double.optim_steps[0]["adam_params"]["learning_rate"] == pytest.approx(3e-4)
    assert run.optim_steps == 1
    # Each future was answered "try_again" once before its result, so the SDK polled.
    assert len(double.requests_to("/api/v1/retrieve_future")) >= 2 * 3


def test_sampler_checkpoint_path_and_ttls(double, service):
    training = service.create_lora_training_client(DEFAULT_BASE_MODEL, rank=4).result()
    saved = training.save_weights_for_sampler("step-1", ttl_seconds=7200).result()
    state = training.save_state("state-1").result()
    assert saved.path == f"tinker://{training.model_id}/sampler_weights/step-1"
    assert state.path == f"tinker://{training.model_id}/weights/state-1"
    assert double.checkpoints[saved.path].ttl_seconds == 7200
    assert double.checkpoints[state.path].ttl_seconds is None

    rest = tinker.RestClient(base_url=double.base_url, api_key=API_KEY)
    rest.set_checkpoint_ttl_from_tinker_path(saved.path, 86400).result()
    assert double.checkpoints[saved.path].ttl_seconds == 86400
    with pytest.raises(tinker.BadRequestError):
        rest.set_checkpoint_ttl_from_tinker_path(saved.path, 60).result()
    assert double.checkpoints[saved.path].ttl_seconds == 86400
    listed = rest.list_checkpoints(training.model_id).result()
    assert {c.tinker_path for c in listed.checkpoints} == {saved.path, state.path}
    assert {c.checkpoint_type for c in listed.checkpoints} == {"sampler", "training"}
    run = rest.get_training_run_by_tinker_path(saved.path).result()
    assert (run.base_model, run.lora_rank, run.is_lora) == (DEFAULT_BASE_MODEL, 4, True)


def test_external_weights_signed_urls_serve_a_real_lora(double, service):
    training = service.create_lora_training_client(DEFAULT_BASE_MODEL, rank=4).result()
    exported = training.save_weights_external("step-0", ttl_seconds=3600).result()
    assert exported.path == f"tinker://{training.model_id}/external_weights/step-0"
    assert double.checkpoints[exported.path].ttl_seconds == 3600

    rest = tinker.RestClient(base_url=double.base_url, api_key=API_KEY)
    urls = rest.get_external_weights_urls(exported.path).result()
    assert set(urls.urls) == {"adapter_model.safetensors", "adapter_config.json"}
    assert urls.expires.tzinfo is not None

    weights = urllib.request.urlopen(urls.urls["adapter_model.safetensors"]).read()
    config = json.loads(urllib.request.urlopen(urls.urls["adapter_config.json"]).read())
    assert (config["r"], config["base_model_name_or_path"], config["peft_type"]) == (4, DEFAULT_BASE_MODEL, "LORA")
    header = _read_safetensors(weights)
    lora_a = [k for k in header if k.endswith("lora_A.weight")]
    assert lora_a and all(header[k]["shape"][0] == 4 for k in lora_a)
    assert [(path, status) for path, _, status in double.downloads] == [(exported.path, 200)] * 2

    forged = urls.urls["adapter_config.json"].replace("Signature=SECRETSIG", "Signature=FORGED")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(forged)
    assert err.value.code == 403
    with pytest.raises(tinker.BadRequestError):
        rest.set_checkpoint_ttl_from_tinker_path(exported.path, 1).result()


def test_closing_the_double_ends_its_connection_threads():
    def handler_threads() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if "process_request_thread" in t.name]

    before = set(handler_threads())
    double = TinkerTrainingDouble().start()
    service = tinker.ServiceClient(base_url=double.base_url, api_key=API_KEY)
    service.create_lora_training_client(DEFAULT_BASE_MODEL, rank=2).result()
    service.close("success").result()
    double.close()
    # Wait for the event (the threads ending), bounded generously so a hang still fails.
    deadline = time.monotonic() + 60
    while set(handler_threads()) - before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not set(handler_threads()) - before


def test_signed_urls_expire():
    with TinkerTrainingDouble(url_lifetime_seconds=0) as double:
        service = tinker.ServiceClient(base_url=double.base_url, api_key=API_KEY)
        training = service.create_lora_training_client(DEFAULT_BASE_MODEL, rank=2).result()
        exported = training.save_weights_external("e").result()
        urls = tinker.RestClient(base_url=double.base_url, api_key=API_KEY).get_external_weights_urls(exported.path)
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(urls.result().urls["adapter_model.safetensors"])
        assert err.value.code == 400 and b"ExpiredToken" in err.value.read()
        service.close("success").result()


def test_lora_files_callback_decides_what_is_served():
    def files(checkpoint, run):
        return {"adapter_model.safetensors": f"{checkpoint.name}:{run.lora_rank}".encode()}

    with TinkerTrainingDouble(lora_files=files) as double:
        service = tinker.ServiceClient(base_url=double.base_url, api_key=API_KEY)
        training = service.create_lora_training_client(DEFAULT_BASE_MODEL, rank=3).result()
        exported = training.save_weights_external("x").result()
        urls = tinker.RestClient(base_url=double.base_url, api_key=API_KEY).get_external_weights_urls(exported.path)
        (url,) = urls.result().urls.values()
        assert urllib.request.urlopen(url).read() == b"x:3"
        service.close("success").result()


def test_sampling_on_the_double_fails_loudly_and_is_recorded(double, service):
    training = service.create_lora_training_client(DEFAULT_BASE_MODEL, rank=4).result()
    sampler = training.save_weights_and_get_sampling_client().result()
    saved = training.save_weights_for_sampler("s").result()
    by_path = training.create_sampling_client(saved.path).result()
    assert by_path.get_base_model() == DEFAULT_BASE_MODEL
    with pytest.raises(tinker.BadRequestError, match=SAMPLING_REFUSED):
        sampler.sample(types.ModelInput.from_ints([1, 2]), 1, types.SamplingParams(max_tokens=4)).result()
    assert len(double.sample_requests) == 1
    assert double.sample_requests[0].body["num_samples"] == 1
    sessions = list(double.sampling_sessions.values())
    assert [s["model_path"] for s in sessions] == [None, saved.path]


# ---------------------------------------------------------------------------------------------
# tinker_cookbook.rl.train.main end to end against the double
# ---------------------------------------------------------------------------------------------


class _Ready:
    """An already-resolved future: awaitable, with ``.result()`` (as tinker's futures)."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __await__(self):
        yield from asyncio.sleep(0).__await__()
        return self.value

    def result(self, timeout: float | None = None) -> Any:
        return self.value


class ScriptedSampler:
    """Stands in for the Sail-backed sampling client the lead's test installs: answers every
    sample with a fixed byte string and known logprobs, and records what it returned."""

    def __init__(self, model_path: str, served: list[tuple[str, list[int], list[float]]]) -> None:
        self.model_path = model_path
        self.served = served

    def get_base_model(self) -> str:
        return DEFAULT_BASE_MODEL

    def sample(self, prompt, num_samples, sampling_params, **_: Any) -> _Ready:
        sequences = []
        for i in range(num_samples):
            tokens = list(b"12\n")[: sampling_params.max_tokens]
            logprobs = [-0.125 * (k + 1) - 0.5 * i for k in range(len(tokens))]
            self.served.append((self.model_path, tokens, logprobs))
            sequences.append(
                types.SampledSequence(stop_reason="stop", sequence_id=f"seq-{len(self.served)}",
                                      _tokens_list=tokens, _logprobs_list=logprobs)
            )
        return _Ready(types.SampleResponse(sequences=sequences))


def test_rl_train_main_runs_three_steps_against_the_double(double, tmp_path, monkeypatch):
    served: list[tuple[str, list[int], list[float]]] = []
    exported: list[str] = []

    async def save_and_sample(self, *args: Any, **kwargs: Any) -> ScriptedSampler:
        # The lead's plan: export the step's weights for Sail instead of a Tinker sampler.
        result = await self.save_weights_external(f"rollout-{len(exported)}", ttl_seconds=3600)
        exported.append(result.path)
        return ScriptedSampler(result.path, served)

    def create_sampler(self, model_path: str, *args: Any, **kwargs: Any) -> _Ready:
        # The loop's other way to a sampler: on save_every steps it saves a named checkpoint
        # and samples from its sampler_weights path.
        exported.append(model_path)
        return _Ready(ScriptedSampler(model_path, served))

    class _Coro:
        def __init__(self, coro):
            self.coro = coro

        def __await__(self):
            return self.coro.__await__()

    monkeypatch.setattr(
        tinker.TrainingClient, "save_weights_and_get_sampling_client",
        lambda self, *a, **k: _Coro(save_and_sample(self, *a, **k)),
    )
    monkeypatch.setattr(tinker.TrainingClient, "create_sampling_client", create_sampler)

    config = arithmetic_train_config(
        base_url=double.base_url, log_path=str(tmp_path), steps=3, groups_per_batch=2, group_size=2,
        save_every=2,
    )
    run_rl_train(double, config)

    assert double.sample_requests == []
    assert double.errors() == []
    (run,) = double.training_runs.values()
    assert (run.base_model, run.lora_rank) == (DEFAULT_BASE_MODEL, config.lora_rank)
    assert len(double.forward_backward_calls) == 3 and run.optim_steps == 3
    assert {c.loss_fn for c in double.forward_backward_calls} == {"importance_sampling"}
    # 3 steps x 2 groups x 2 episodes, each one sample: every sampled token and logprob
    # reached forward_backward as the datum's targets and sampler logprobs.
    assert len(served) == 12
    datums = double.datums()
    assert len(datums) == 12
    for d in datums:
        targets, logprobs = d.get("target_tokens"), d.get("logprobs")
        mask = [a != 0.0 or lp != 0.0 for a, lp in zip(d.get("advantages"), logprobs)]
        sampled = [t for t, m in zip(targets, mask) if m]
        if sampled:  # a group with equal rewards has zero advantages everywhere
            assert sampled == list(b"12\n")
        assert [lp for lp, m in zip(logprobs, mask) if m] in ([], [-0.125, -0.25, -0.375])
    # The loop asks for a sampler before step 0 and after each optim_step (the last one is
    # for evals after the final step): each holds the weights after 0, 1, 2, 3 steps, and step
    # i's rollouts sampled from sampler i. With save_every=2, step 2's came from the periodic
    # checkpoint through create_sampling_client(sampler_path), the others from
    # save_weights_and_get_sampling_client (here: an external-weights export).
    assert [double.checkpoints[p].optim_steps_before for p in exported] == [0, 1, 2, 3]
    kinds = [double.checkpoints[p].kind for p in exported]
    assert kinds == ["external_weights", "external_weights", "sampler_weights", "external_weights"]
    periodic = [c for c in double.checkpoints.values() if c.name == "000002"]
    assert {c.kind for c in periodic} == {"weights", "sampler_weights"}
    assert {c.ttl_seconds for c in periodic} == {config.ttl_seconds}
    assert exported[2] in {c.tinker_path for c in periodic}
    assert [p for p, _, _ in served] == [exported[i] for i in range(3) for _ in range(4)]
    # The final checkpoint: training state and sampler weights, kept forever (no TTL).
    final = [c for c in double.checkpoints.values() if c.name == "final"]
    assert {c.kind for c in final} == {"weights", "sampler_weights"}
    assert {c.ttl_seconds for c in final} == {None}
    assert all(c.optim_steps_before == 3 for c in final)
    assert list(double.finished_sessions.values()) == [{"reason": {"type": "success"}, "detail": None}]
