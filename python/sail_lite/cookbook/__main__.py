"""``python -m sail_lite.cookbook <recipe module> [recipe args...] [--sail-... options]``

Runs any tinker-cookbook RL recipe's command line (its ``__main__``, which ends in
``rl.train.main``) inside :func:`sail_lite.cookbook.sample_on_sail`, so its rollouts sample on
Sail. Options starting with ``--sail-`` are ours, wherever they appear; everything else goes to
the recipe unchanged. Example::

    python -m sail_lite.cookbook tinker_cookbook.recipes.math_rl.train \\
        --sail-model moonshotai/Kimi-K2.6 --sail-window priority \\
        model_name=moonshotai/Kimi-K2.6 log_path=/tmp/math-rl
"""

from __future__ import annotations

import argparse
import os
import runpy
import sys
from collections.abc import Sequence

from sail_lite.cookbook import sample_on_sail
from sail_lite.cookbook._hooks import DEFAULT_TTL_SECONDS


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m sail_lite.cookbook",
        description="Run a tinker-cookbook RL recipe with its rollouts sampled on Sail.",
        allow_abbrev=False,
    )
    p.add_argument("recipe", help="the recipe's module, e.g. tinker_cookbook.recipes.math_rl.train")
    p.add_argument("--sail-model", default=os.environ.get("SAIL_MODEL"), help="the base model's name on Sail (default: $SAIL_MODEL)")
    p.add_argument("--sail-window", default="priority", help="Sail completion window (default: priority)")
    p.add_argument(
        "--sail-adapter-config", default=None, help="adapter_config.json (path or JSON) for each step's LoRA; default: derived from the run"
    )
    p.add_argument(
        "--sail-adapter-base-model", default=None, help="base_model_name_or_path for a derived adapter config (default: --sail-model)"
    )
    p.add_argument(
        "--sail-ttl",
        type=int,
        default=DEFAULT_TTL_SECONDS,
        help=f"TTL in seconds of each step's exported weights on Tinker (default: {DEFAULT_TTL_SECONDS})",
    )
    p.add_argument("--sail-base-url", default=None, help="Sail's API root (default: $SAIL_API_URL or Sail's)")
    p.add_argument("--sail-poll-timeout", type=float, default=None, help="give up on a sample after this many seconds")
    p.add_argument(
        "--sail-prompt-logprobs-on-tinker",
        action="store_true",
        help="serve prompt logprobs (compute_post_kl) on a per-step Tinker sampling client",
    )
    return p


def split_arguments(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """(our arguments: the recipe and every ``--sail-*`` option with its value, the recipe's)."""
    ours: list[str] = []
    theirs: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--sail-"):
            ours.append(arg)
            takes_value = "=" not in arg and arg != "--sail-prompt-logprobs-on-tinker"
            if takes_value and i + 1 < len(args):
                ours.append(args[i + 1])
                i += 1
        elif not any(not a.startswith("-") for a in ours) and not arg.startswith("-"):
            ours.append(arg)  # the recipe module: the first positional argument
        elif arg in ("-h", "--help") and not ours:
            ours.append(arg)
        else:
            theirs.append(arg)
        i += 1
    return ours, theirs


def main(argv: Sequence[str] | None = None) -> int:
    ours, recipe_args = split_arguments(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    ns = parser.parse_args(ours)
    if not ns.sail_model:
        parser.error("--sail-model (or $SAIL_MODEL) is required: the base model's name on Sail")
    client_kwargs = {}
    if ns.sail_base_url is not None:
        client_kwargs["base_url"] = ns.sail_base_url
    if ns.sail_poll_timeout is not None:
        client_kwargs["poll_timeout"] = ns.sail_poll_timeout
    with sample_on_sail(
        model=ns.sail_model,
        completion_window=ns.sail_window,
        adapter_config=ns.sail_adapter_config,
        adapter_base_model=ns.sail_adapter_base_model,
        ttl_seconds=ns.sail_ttl,
        prompt_logprobs_on_tinker=ns.sail_prompt_logprobs_on_tinker,
        **client_kwargs,
    ):
        saved_argv = sys.argv
        sys.argv = [ns.recipe, *recipe_args]
        try:
            runpy.run_module(ns.recipe, run_name="__main__", alter_sys=True)
        finally:
            sys.argv = saved_argv
    return 0


if __name__ == "__main__":
    sys.exit(main())
