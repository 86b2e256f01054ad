"""The clients under test, one module each. Every module defines

    async def open_client(cfg: ClientConfig) -> Client

where ``Client.sample(model_input)`` returns a tinker-cookbook ``TokensWithLogprobs`` and
``Client.aclose()`` releases it. Modules are imported only in the client's own process."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

# name -> (module, what it is, as the tables say it)
CLIENTS: dict[str, tuple[str, str]] = {
    "sail-lite": ("clients.sail_lite_responses", "sail-lite SailTokenCompleter"),
    "sail-lite-hyper": ("clients.sail_lite_hyper", "sail-lite SailTokenCompleter over hyper's HTTP/1.1 client"),
    "sail-lite-completions": ("clients.sail_lite_completions", "sail-lite OpenAICompatibleTokenCompleter (/v1/completions)"),
    "sail-sdk": ("clients.sail_sdk", "official Sail SDK 0.17.1 SailTokenCompleter"),
    "openai-sdk": ("clients.openai_sdk", "OpenAI Python SDK, responses.create(background) + retrieve"),
    "aiohttp": ("clients.aiohttp_loop", "hand-written aiohttp POST + GET loop"),
    "python-floor": ("clients.python_floor", "Python floor: asyncio task + to_ints() + TokensWithLogprobs, no I/O"),
}


@dataclass(frozen=True)
class ClientConfig:
    base_url: str  # the API root, without /v1
    api_key: str
    model: str
    max_tokens: int
    window: str


@dataclass
class Client:
    sample: Callable[[Any], Awaitable[Any]]
    aclose: Callable[[], Awaitable[None]]


async def open_client(name: str, cfg: ClientConfig) -> Client:
    module = importlib.import_module(CLIENTS[name][0])
    return await module.open_client(cfg)
