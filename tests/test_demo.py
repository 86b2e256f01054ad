"""The demo: the pure-Python LoRA archive, the toy environment under tinker-cookbook's own rollout
code, and the runner against a real emulator (counts in the summary, retries, the LoRA actually
changing what is sampled), plus the progress bar and the summary table."""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import os
import re
import struct
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from tinker_cookbook.completers import TokenCompleter, TokensWithLogprobs
from tinker_cookbook.rl.rollouts import do_group_rollout, do_single_rollout

from sail_lite.demo import lora_archive as la
from sail_lite.demo.progress import ProgressBar
from sail_lite.demo.runner import DemoConfig, demo_emulator, run_demo
from sail_lite.demo.summary import format_summary, format_table
from sail_lite.demo.timing import percentile
from sail_lite.demo.toy_env import (
    RETRY_PROMPT,
    ArithmeticEnv,
    ArithmeticGroupBuilder,
    Problem,
    decode_bytes,
    encode_bytes,
    make_problems,
    score_answer,
)
from sail_lite.emulator import Emulator
from sail_lite.tinker import load_adapter_config

# --- the LoRA archive -----------------------------------------------------------------------


def read_archive(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]


def parse_safetensors(data: bytes) -> tuple[dict, bytes]:
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_len])
    return header, data[8 + header_len :]


def test_lora_archive_is_deterministic_and_depends_on_the_seed():
    assert la.lora_archive(3) == la.lora_archive(3)
    assert la.lora_archive(3) != la.lora_archive(4)
    tar_bytes = gzip.decompress(la.lora_archive(3))
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        assert all(m.mtime == 0 for m in tar.getmembers())  # no timestamps inside either


def test_lora_archive_holds_a_valid_peft_adapter():
    files = read_archive(la.lora_archive(7, rank=4))
    assert set(files) == {"adapter_config.json", "adapter_model.safetensors"}
    config = json.loads(files["adapter_config.json"])
    assert config == la.adapter_config(4)
    load_adapter_config(config, base_model="moonshotai/Kimi-K2.6")  # what Sail's LoRA pilot accepts

    header, data = parse_safetensors(files["adapter_model.safetensors"])
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    assert len(tensors) == 4
    end = 0
    for name, info in tensors.items():
        assert name.startswith("base_model.model.model.layers.0.self_attn.")
        assert info["dtype"] == "F32"
        start, stop = info["data_offsets"]
        assert start == end  # contiguous, in order
        rows, cols = info["shape"]
        assert (rows, cols) == ((4, la.HIDDEN_SIZE) if ".lora_A." in name else (la.HIDDEN_SIZE, 4))
        assert stop - start == rows * cols * 4
        values = struct.unpack(f"<{rows * cols}f", data[start:stop])
        assert any(v != 0.0 for v in values)  # lora_B too: an all-zero B would be the identity
        end = stop
    assert end == len(data)
    assert (8 + struct.unpack("<Q", files["adapter_model.safetensors"][:8])[0]) % 8 == 0  # data 8-byte aligned


def test_the_emulator_loads_the_archive_from_a_signed_url():
    """The archive is accepted by the emulator's loader (a bad archive fails the sample)."""
    import sail_lite

    async def sample(completer):
        return await completer(list(b"Q: What is 2 + 2?\nA:"), ["\n"])

    with Emulator(latency=0) as emu:
        url = emu.add_tinker_archive("t", la.lora_archive(1))
        completer = sail_lite.SailTokenCompleter(
            model="moonshotai/Kimi-K2.6",
            max_tokens=4,
            base_url=emu.base_url,
            api_key=emu.api_key,
            tinker_lora_signed_url=url,
            adapter_config=la.adapter_config(),
        )
        out = asyncio.run(sample(completer))
        stats = emu.stats()
    assert len(out.tokens) == len(out.logprobs) >= 1
    assert stats["lora_downloads"] == 1
    assert stats["failures"] == 0


# --- the toy environment, driven by tinker-cookbook's rollout code ------------------------


class ScriptedPolicy(TokenCompleter):
    """Answers from a script and records every prompt it was shown (no sampling involved)."""

    def __init__(self, answers: list[str]) -> None:
        self.answers = list(answers)
        self.prompts: list[list[int]] = []

    async def __call__(self, model_input, stop, *, max_tokens=None):
        self.prompts.append(model_input.to_ints())
        assert stop == ["\n"]
        return TokensWithLogprobs(tokens=encode_bytes(self.answers.pop(0)), maybe_logprobs=None)


def test_score_answer():
    assert score_answer(" 12\n", 12) == (True, True)
    assert score_answer(" 11", 12) == (False, True)
    assert score_answer(" twelve", 12) == (False, False)
    assert score_answer("12 or 13", 13) == (False, True)  # the first number counts


@pytest.mark.parametrize(
    ("answers", "reward", "turns"),
    [
        ([" 12\n"], 1.0, 1),
        ([" 11\n", " 12"], 1.0, 2),
        ([" 3\n", " 4\n", " 5\n"], 0.1, 3),
        ([" a\n", " 7\n", " no\n"], 0.0, 3),
    ],
)
def test_episode_rewards_and_turns(answers, reward, turns):
    policy = ScriptedPolicy(answers)
    trajectory = asyncio.run(do_single_rollout(policy, ArithmeticEnv(Problem(7, 5))))
    assert len(trajectory.transitions) == turns
    assert sum(t.reward for t in trajectory.transitions) == pytest.approx(reward)
    assert trajectory.stop_reason == ("completed" if reward == 1.0 else "max_turns")
    assert policy.prompts[0] == encode_bytes("Q: What is 7 + 5?\nA:")
    # Each observation extends the previous one plus the action: one datum per episode.
    for i in range(1, turns):
        previous = policy.prompts[i - 1] + encode_bytes(answers[i - 1])
        assert policy.prompts[i][: len(previous)] == previous
        assert decode_bytes(policy.prompts[i]).endswith("\n" + RETRY_PROMPT)


def test_group_builder_makes_group_size_episodes_and_reports_each():
    done = []
    builder = ArithmeticGroupBuilder(Problem(2, 3), 5, on_episode_done=lambda: done.append(1))
    policy = ScriptedPolicy([" 5\n"] * 5)
    group = asyncio.run(do_group_rollout(builder, policy))
    assert group.get_total_rewards() == [1.0] * 5
    assert len(done) == 5


def test_problems_are_deterministic():
    assert make_problems(5, seed=1) == make_problems(5, seed=1)
    assert make_problems(5, seed=1) != make_problems(5, seed=2)
    assert all(1 <= p.a <= 9 and 1 <= p.b <= 9 for p in make_problems(50))


# --- the runner against the emulator --------------------------------------------------------


def run(config: DemoConfig, **emulator_overrides):
    with demo_emulator(config, **emulator_overrides) as emu:
        snapshots = []
        result = asyncio.run(run_demo(config, emu, on_progress=snapshots.append))
    return result, snapshots


def test_demo_counts_add_up_and_retries_are_measured():
    config = DemoConfig(groups=4, group_size=4, concurrency=2, latency_scale=0.05, fault_rate=0.2)
    result, snapshots = run(config)

    assert len(result.groups) == 4 and result.rollouts == 16
    assert [g.policy for g in result.groups] == ["base", "lora", "base", "lora"]
    assert result.groups[0].problem == result.groups[1].problem  # pairs share a question
    turns = sum(sum(g.turns) for g in result.groups)
    assert 16 <= result.samples == turns <= 16 * config.max_turns
    assert len(result.calls.latencies) == result.samples
    assert 0 < result.tokens <= result.samples * config.max_tokens
    assert 0 < result.latency(50) <= result.latency(99) <= result.wall_seconds
    assert result.samples_per_second == pytest.approx(result.samples / result.wall_seconds)
    for g in result.groups:
        assert all(r in (0.0, 0.1, 1.0) for r in g.rewards)
        assert sum(g.advantages) == pytest.approx(0.0)

    # 20% of creates and polls were answered 429/503: every one was retried, none duplicated a sample.
    stats = result.emulator_stats
    injected = stats["faults"]["429"] + stats["faults"]["503"]
    assert injected > 0
    assert result.retries >= injected - stats["faults"].get("drop", 0)
    assert result.http_requests >= stats["requests_total"] - 1  # the emulator saw what the engine sent
    assert stats["duplicate_samples"] == 0
    assert stats["lora_downloads"] == 1

    # Progress went from nothing to everything, monotonically.
    done = [s.rollouts_done for s in snapshots]
    assert done == sorted(done) and done[-1] == 16
    assert snapshots[-1].samples == result.samples


def test_lora_groups_sample_differently_from_base_groups():
    """Greedy decoding is deterministic, so on the same questions any difference between base and
    LoRA groups comes from the adapter's weights."""
    config = DemoConfig(groups=8, group_size=2, temperature=0.0, latency_scale=0.0, fault_rate=0.0, max_turns=1)
    result, _ = run(config)
    by_policy = {"base": [], "lora": []}
    for g in result.groups:
        assert len(set(g.answers)) == 1, g  # greedy: every rollout of a group is the same
        by_policy[g.policy].append(g.answers[0])
    assert len(by_policy["base"]) == len(by_policy["lora"]) == 4
    assert by_policy["base"] != by_policy["lora"]


def test_demo_without_lora_uses_the_base_model_only():
    config = DemoConfig(groups=3, group_size=2, lora=False, latency_scale=0.0, fault_rate=0.0)
    result, _ = run(config)
    assert [g.policy for g in result.groups] == ["base"] * 3
    assert len({g.problem for g in result.groups}) >= 2  # no pairing without the LoRA
    assert result.emulator_stats["lora_downloads"] == 0
    assert result.emulator_stats["archive_downloads"] == 0


def test_summary_shows_the_measured_numbers():
    config = DemoConfig(groups=2, group_size=3, latency_scale=0.0, fault_rate=0.0)
    result, _ = run(config)
    text = format_summary(result)
    assert re.search(rf"^  samples\s+{result.samples}\s", text, re.M)
    assert re.search(rf"^  tokens\s+{result.tokens}\s", text, re.M)
    assert re.search(rf"^  rollouts\s+6\s", text, re.M)
    for label in ("samples/s", "tokens/s", "latency p50", "latency p99", "retries", "LoRA downloads"):
        assert label in text
    assert f"{result.latency(99):.3f} s" in text
    lines = text.splitlines()
    group_rows = [line for line in lines if line.strip().startswith(("0  base", "1  lora"))]
    assert len(group_rows) == 2
    assert f"{result.groups[1].mean_reward:.2f}" in group_rows[1]
    assert "mean reward: base" in text


# --- progress bar, table, percentiles --------------------------------------------------------


def test_progress_bar_redraws_in_place_on_a_tty():
    out = io.StringIO()
    bar = ProgressBar(10, stream=out, tty=True, redraw_seconds=0, width=10)
    bar.update(3, 1.0, "6 samples")
    bar.update(10, 2.0)
    bar.finish(10, 2.0)
    text = out.getvalue()
    assert "\n" not in text.rstrip("\n") and text.endswith("\n")
    assert text.count("\r") >= 2
    assert "[###.......]  3/10 rollouts    1.0 s  6 samples" in text
    assert "[##########] 10/10 rollouts" in text


def test_progress_bar_prints_periodic_lines_when_not_a_tty():
    out = io.StringIO()
    bar = ProgressBar(4, stream=out, line_seconds=3600, width=4)
    assert bar.tty is False
    for done in range(5):
        bar.update(done, float(done))  # throttled: only the first is printed
    bar.finish(4, 4.0)
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert lines == ["[....] 0/4 rollouts    0.0 s", "[####] 4/4 rollouts    4.0 s"]


def test_format_table_aligns_columns():
    table = format_table(["name", "n"], [["a", "1"], ["bbb", "100"]], [False, True])
    assert table.splitlines() == ["  name    n", "  ----  ---", "  a       1", "  bbb   100"]


def test_percentile_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile([0.3], 99) == 0.3
    assert percentile([], 50) == 0.0


# --- the GRPO example -------------------------------------------------------------------------


def test_grpo_example_samples_against_the_emulator_without_tinker_credentials():
    example = Path(__file__).resolve().parents[1] / "examples" / "grpo_rollouts.py"
    env = {k: v for k, v in os.environ.items() if k not in ("TINKER_API_KEY", "SAIL_API_KEY", "SAIL_API_URL")}
    proc = subprocess.run(
        [sys.executable, str(example), "--steps", "2", "--groups", "2", "--group-size", "3"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    steps = [line for line in lines if line.startswith("step ")]
    assert [s.split(":")[0] for s in steps] == ["step 0", "step 1"]
    assert all("over 6 rollouts" in s for s in steps)
    assert "TINKER_API_KEY is not set" in lines[-1]


def test_progress_bar_abandoned_mid_line_ends_the_line():
    out = io.StringIO()
    bar = ProgressBar(4, stream=out, tty=True, redraw_seconds=0)
    bar.update(1, 0.5)
    bar.abandon()
    bar.update(2, 1.0)  # nothing more is drawn
    assert out.getvalue().endswith("0.5 s\n")
