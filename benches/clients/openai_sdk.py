"""The OpenAI Python SDK against Sail's Responses API: responses.create(background=True) with
the raw prompt tokens in extra_body, then responses.retrieve polling (plain_polling's
schedule). SDK defaults otherwise: 2 retries with its own backoff, no idempotency key."""

from __future__ import annotations

import asyncio

from openai import AsyncOpenAI
from tinker_cookbook.completers import TokensWithLogprobs

from clients import Client, ClientConfig
from clients.plain_polling import FINISHED_BAD, FINISHED_OK, LOGPROBS_INCLUDE, RAW_PROMPT_PLACEHOLDER, ResponseFailed, poll_delays


def _tokens_with_logprobs(response) -> TokensWithLogprobs:
    message = next(item for item in response.output if item.type == "message")
    text = next(block for block in message.content if block.type == "output_text")
    # token_ids and stop_reason are Sail's extra fields; the SDK's models keep them as extras.
    stop_reason = getattr(text, "stop_reason", None)
    return TokensWithLogprobs(
        tokens=list(text.token_ids),
        maybe_logprobs=None if text.logprobs is None else [lp.logprob for lp in text.logprobs],
        stop_reason="length" if stop_reason == "length" or response.status == "incomplete" else "stop",
    )


async def open_client(cfg: ClientConfig) -> Client:
    client = AsyncOpenAI(base_url=cfg.base_url + "/v1", api_key=cfg.api_key)

    async def sample(model_input):
        response = await client.responses.create(
            model=cfg.model,
            input=RAW_PROMPT_PLACEHOLDER,
            background=True,
            max_output_tokens=cfg.max_tokens,
            temperature=1.0,
            top_p=1.0,
            include=LOGPROBS_INCLUDE,
            metadata={"completion_window": cfg.window},
            extra_body={"raw_prompt_tokens": model_input.to_ints()},
        )
        delays = poll_delays()
        while response.status not in FINISHED_OK:
            if response.status in FINISHED_BAD:
                raise ResponseFailed(f"{response.id} ended {response.status}")
            await asyncio.sleep(next(delays))
            response = await client.responses.retrieve(response.id)
        return _tokens_with_logprobs(response)

    return Client(sample, client.close)
