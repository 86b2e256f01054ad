"""The Python floor: what any asyncio completer must at least spend per sample with no I/O at
all. The harness's one task per sample, ModelInput.to_ints(), one future resolved by the event
loop (where a real client's response would land), and a TokensWithLogprobs holding fresh
lists of the requested number of tokens and logprobs."""

from __future__ import annotations

import asyncio

from tinker_cookbook.completers import TokensWithLogprobs

from clients import Client, ClientConfig


async def open_client(cfg: ClientConfig) -> Client:
    tokens = list(range(cfg.max_tokens))
    logprobs = [-1.0] * cfg.max_tokens
    loop = asyncio.get_running_loop()

    async def sample(model_input):
        model_input.to_ints()
        result = loop.create_future()
        loop.call_soon(result.set_result, (tokens, logprobs))
        sampled, sampled_logprobs = await result
        return TokensWithLogprobs(tokens=list(sampled), maybe_logprobs=list(sampled_logprobs), stop_reason="length")

    async def aclose() -> None:
        pass

    return Client(sample, aclose)
