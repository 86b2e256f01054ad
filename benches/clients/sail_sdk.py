"""The official Sail SDK's SailTokenCompleter, as shipped (sail 0.17.1).

It reads SAIL_API_URL / SAIL_API_KEY once per process (the harness sets them before this
import), sends its default window ("balanced"), makes one attempt per HTTP call (no retry,
no idempotency key) and polls every 20 s (`sail.tinker._POLL_INTERVAL_SECONDS`, a module
constant with no setting), starting right after the create returns. Not patched here."""

from __future__ import annotations

import sail

from clients import Client, ClientConfig


async def open_client(cfg: ClientConfig) -> Client:
    completer = sail.SailTokenCompleter(
        model=cfg.model,
        max_tokens=cfg.max_tokens,
        completion_window=cfg.window,
    )

    async def sample(model_input):
        return await completer(model_input, None)

    async def aclose() -> None:
        pass

    return Client(sample, aclose)
