"""A GRPO-style loop with sail-lite: sample groups of rollouts on Sail, centre each group's
rewards into advantages, train, and sample the next step from the new checkpoint.

    python examples/grpo_rollouts.py                # no Tinker key: sampling only, on a local emulator
    TINKER_API_KEY=... SAIL_API_KEY=... python examples/grpo_rollouts.py --steps 20

With ``TINKER_API_KEY`` set it trains a LoRA on Tinker and, after every optimiser step, exports
the adapter and hands Sail a freshly resolved signed URL for it (``sail_completer_for_checkpoint``
also re-resolves the URL by itself if a step outlives it). The task is the demo's toy arithmetic
environment (``sail_lite.demo.toy_env``): up to three tries at a small sum, reward 1 when right.
The training half also needs tinker-cookbook's full dependencies (``pip install tinker-cookbook``
pulls in ``datasets`` and ``blobfile``, which its data processing imports).
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from tinker_cookbook.completers import TokenCompleter
from tinker_cookbook.rl.rollouts import do_group_rollout
from tinker_cookbook.rl.types import TrajectoryGroup

import sail_lite
from sail_lite.demo.toy_env import ArithmeticGroupBuilder, decode_bytes, encode_bytes, make_problems

BASE_MODEL = "moonshotai/Kimi-K2.6"
LORA_RANK = 16
MAX_TOKENS = 16


def group_advantages(rewards: list[float]) -> list[float]:
    """GRPO's advantage: each rollout's reward minus the mean reward of its group."""
    mean = sum(rewards) / len(rewards)
    return [r - mean for r in rewards]


async def sample_groups(
    policy: TokenCompleter,
    step: int,
    args: argparse.Namespace,
    encode: Callable[[str], list[int]] = encode_bytes,
    decode: Callable[[list[int]], str] = decode_bytes,
) -> list[TrajectoryGroup]:
    """One batch: ``args.groups`` questions, ``args.group_size`` rollouts each, all sampled concurrently."""
    problems = make_problems(args.groups, seed=step)
    builders = [ArithmeticGroupBuilder(p, args.group_size, encode=encode, decode=decode) for p in problems]
    return list(await asyncio.gather(*(do_group_rollout(b, policy) for b in builders)))


def report(step: int, groups: list[TrajectoryGroup]) -> list[list[float]]:
    advantages = [group_advantages(g.get_total_rewards()) for g in groups]
    rewards = [r for g in groups for r in g.get_total_rewards()]
    # Groups where every rollout scored the same carry no learning signal under GRPO.
    informative = sum(1 for adv in advantages if any(abs(a) > 1e-9 for a in adv))
    print(
        f"step {step}: mean reward {sum(rewards) / len(rewards):.3f} over {len(rewards)} rollouts, "
        f"{informative}/{len(groups)} groups with a non-zero advantage"
    )
    return advantages


# --- without Tinker credentials: the sampling half, against a local emulator -----------------


async def sample_only(args: argparse.Namespace) -> None:
    from sail_lite.emulator import Emulator

    with Emulator(latency=0.1) as emulator:
        policy = sail_lite.SailTokenCompleter(
            model=BASE_MODEL,
            max_tokens=MAX_TOKENS,
            completion_window=args.window,
            base_url=emulator.base_url,
            api_key=emulator.api_key,
        )
        for step in range(args.steps):
            report(step, await sample_groups(policy, step, args))
    print("TINKER_API_KEY is not set: sampled only (set it, and SAIL_API_KEY, to train on Tinker).")


# --- with Tinker credentials: train on Tinker, sample each checkpoint on Sail ----------------


def adapter_config() -> dict[str, Any]:
    """The PEFT config Sail needs next to the checkpoint URL (the LoRA Tinker trains)."""
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": LORA_RANK,
        "lora_alpha": 32,
        "base_model_name_or_path": BASE_MODEL,
    }


async def train(args: argparse.Namespace) -> None:
    import tinker
    import torch
    from tinker_cookbook.rl.data_processing import assemble_training_data

    from sail_lite.tinker import sail_completer_for_checkpoint

    service = tinker.ServiceClient()
    training = await service.create_lora_training_client(base_model=BASE_MODEL, rank=LORA_RANK)
    tokenizer = training.get_tokenizer()

    def encode(text: str) -> list[int]:
        return tokenizer.encode(text, add_special_tokens=False)

    sail_options = {"model": BASE_MODEL, "max_tokens": MAX_TOKENS, "completion_window": args.window}
    # A fresh LoRA is the identity, so step 0 samples the base model.
    policy: TokenCompleter = sail_lite.SailTokenCompleter(**sail_options)
    for step in range(args.steps):
        groups = await sample_groups(policy, step, args, encode=encode, decode=tokenizer.decode)
        advantages = report(step, groups)

        # Groups whose rollouts all scored the same have zero advantages: nothing to learn.
        kept = [(g, a) for g, a in zip(groups, advantages) if any(abs(x) > 1e-9 for x in a)]
        if kept:
            # Sail returns no Tinker sequence ids, so the data carries no provenance.
            data, _ = assemble_training_data(
                [g for g, _ in kept], [torch.tensor(a) for _, a in kept], include_provenance=False
            )
            # The importance-sampling loss takes no mask (as in tinker-cookbook's own train step).
            data = [replace(d, loss_fn_inputs={k: v for k, v in d.loss_fn_inputs.items() if k != "mask"}) for d in data]
            await training.forward_backward(data, loss_fn="importance_sampling")
            await training.optim_step(tinker.AdamParams(learning_rate=args.learning_rate))

        # Export the adapter (only exported checkpoints can be signed) with a TTL, so step
        # checkpoints are cleaned up, and sample the next step from it through a fresh signed URL.
        saved = await training.save_weights_external(f"grpo-step-{step + 1:04d}", ttl_seconds=3600)
        policy = await sail_completer_for_checkpoint(
            service, saved.path, adapter_config=adapter_config(), **sail_options
        )
        print(f"  checkpoint {saved.path} -> Sail")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--groups", type=int, default=4, help="questions per step")
    parser.add_argument("--group-size", type=int, default=8, help="rollouts per question")
    parser.add_argument("--window", default="priority", help="Sail completion window")
    parser.add_argument("--learning-rate", type=float, default=4e-5)
    args = parser.parse_args()
    asyncio.run(train(args) if os.environ.get("TINKER_API_KEY") else sample_only(args))


if __name__ == "__main__":
    main()
