"""The child process of the sampling-scope and exit tests: samples N prompts (groups of
identical prompts) with a SailTokenCompleter against an emulator, optionally in a sampling
scope, and writes what it got as JSON. Run as ``python tests/scope_child.py CONFIG_JSON``."""

from __future__ import annotations

import asyncio
import json
import sys

import sail_lite

MODEL = "sail-lite/byte-ngram"


def prompts(n: int, group: int) -> list[list[int]]:
    """``n`` prompts in groups of ``group`` identical ones (a GRPO group per prompt)."""
    return [list(f"scoped prompt {i // group}: ".encode()) for i in range(n)]


async def sample_all(config: dict) -> list:
    completer = sail_lite.SailTokenCompleter(
        model=MODEL,
        max_tokens=8,
        base_url=config["base_url"],
        api_key=config["api_key"],
        max_retries=config.get("max_retries", 8),
        sampling_scope=config.get("scope"),
    )
    gate = asyncio.Semaphore(config.get("concurrency", 2000))

    async def one(prompt: list[int]) -> object:
        async with gate:
            try:
                sample = await completer(prompt)
            except sail_lite.SailError as exc:
                return {"error": type(exc).__name__, "message": str(exc)}
            return sample.tokens

    print("sampling", flush=True)
    return await asyncio.gather(*(one(p) for p in prompts(config["n"], config["group"])))


def main() -> None:
    config = json.loads(sys.argv[1])
    results = asyncio.run(sample_all(config))
    with open(config["out"], "w") as f:
        json.dump({"results": results, "metrics": sail_lite.engine_metrics()}, f)


if __name__ == "__main__":
    main()
