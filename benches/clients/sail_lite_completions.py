"""sail-lite's OpenAICompatibleTokenCompleter against the emulator's /v1/completions
(one synchronous request per sample: no create/poll)."""

from __future__ import annotations

import sail_lite

from clients import Client, ClientConfig


async def open_client(cfg: ClientConfig) -> Client:
    completer = sail_lite.OpenAICompatibleTokenCompleter(
        model=cfg.model,
        max_tokens=cfg.max_tokens,
        base_url=cfg.base_url + "/v1",
        api_key=cfg.api_key,
    )

    async def sample(model_input):
        return await completer(model_input, None)

    async def aclose() -> None:
        pass

    return Client(sample, aclose)
