"""sail-lite's SailTokenCompleter, as a tinker-cookbook recipe would use it."""

from __future__ import annotations

import sail_lite

from clients import Client, ClientConfig


async def open_client(cfg: ClientConfig) -> Client:
    completer = sail_lite.SailTokenCompleter(
        model=cfg.model,
        max_tokens=cfg.max_tokens,
        completion_window=cfg.window,
        base_url=cfg.base_url,
        api_key=cfg.api_key,
    )

    async def sample(model_input):
        return await completer(model_input, None)

    async def aclose() -> None:
        pass

    return Client(sample, aclose)
