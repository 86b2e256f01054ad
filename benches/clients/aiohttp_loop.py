"""A hand-written aiohttp client: the POST + GET loop in plain asyncio Python, as a user would
write it without an SDK. Careful but simple: one session (256 connections, like sail-lite's
default), stdlib json, plain_polling's schedule, and retries of 429 / 5xx / dropped
connections (up to 8, honouring Retry-After) with one Idempotency-Key per sample."""

from __future__ import annotations

import asyncio
import json
import uuid

import aiohttp

from clients import Client, ClientConfig
from clients.plain_polling import FINISHED_BAD, FINISHED_OK, LOGPROBS_INCLUDE, RAW_PROMPT_PLACEHOLDER, ResponseFailed, from_response_dict, poll_delays

MAX_RETRIES = 8
RETRY_STATUSES = {408, 409, 429, 500, 502, 503, 504}


class HTTPStatusError(Exception):
    pass


async def open_client(cfg: ClientConfig) -> Client:
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=256),
        headers={"Authorization": f"Bearer {cfg.api_key}", "Content-Type": "application/json"},
        timeout=aiohttp.ClientTimeout(total=60),
    )
    create_url = cfg.base_url + "/v1/responses"

    async def request(method: str, url: str, body: bytes | None = None, headers: dict | None = None) -> dict:
        for attempt in range(MAX_RETRIES + 1):
            try:
                async with session.request(method, url, data=body, headers=headers) as resp:
                    payload = await resp.read()
                    if resp.status < 300:
                        return json.loads(payload)
                    if resp.status not in RETRY_STATUSES or attempt == MAX_RETRIES:
                        raise HTTPStatusError(f"{method} {url}: HTTP {resp.status}: {payload[:200]!r}")
                    delay = float(resp.headers.get("Retry-After", 0)) or 0.1 * 2**attempt
            except (aiohttp.ClientConnectionError, asyncio.TimeoutError):
                if attempt == MAX_RETRIES:
                    raise
                delay = 0.1 * 2**attempt
            await asyncio.sleep(min(delay, 8.0))
        raise AssertionError("unreachable")

    async def sample(model_input):
        body = json.dumps({
            "model": cfg.model,
            "input": RAW_PROMPT_PLACEHOLDER,
            "raw_prompt_tokens": model_input.to_ints(),
            "max_output_tokens": cfg.max_tokens,
            "temperature": 1.0,
            "top_p": 1.0,
            "include": LOGPROBS_INCLUDE,
            "background": True,
            "metadata": {"completion_window": cfg.window},
        }).encode()
        response = await request("POST", create_url, body, {"Idempotency-Key": uuid.uuid4().hex})
        poll_url = f"{create_url}/{response['id']}"
        delays = poll_delays()
        while response["status"] not in FINISHED_OK:
            if response["status"] in FINISHED_BAD:
                raise ResponseFailed(f"{response['id']} ended {response['status']}")
            await asyncio.sleep(next(delays))
            response = await request("GET", poll_url)
        return from_response_dict(response)

    return Client(sample, session.close)
