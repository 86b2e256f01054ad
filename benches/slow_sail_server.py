"""A slow Sail: the create/poll protocol in plain Python on aiohttp, one process, one event loop.

`python slow_sail_server.py '<config json>'` prints one JSON line (base_url, api_key, pid) once
it listens, then serves until its standard input closes, like serve_emulator.py. It exists so
the latency-0 throughput scenario can also run against a server that is nothing like the Rust
emulator (JSON encoded per request by the stdlib, Python handlers, a single core): if a client's
CPU advantage over the official SDK only held against a very fast server, this run shows it.

What it implements: `POST /v1/responses` (background, raw_prompt_tokens, include logprobs,
Idempotency-Key replay, a bearer key), `GET /v1/responses/{id}`, `POST /v1/responses/{id}/cancel`,
`GET /v1/models`, and the emulator's `GET /_stats` / `POST /_stats/reset` counters that
bench_client.py reads. Every sample completes at once (latency 0) with `max_output_tokens`
pseudo-random tokens (the emulator's model may stop earlier). No faults, no text endpoints."""

from __future__ import annotations

import json
import os
import random
import sys
import threading
import time
from typing import Any

from aiohttp import web

API_KEY = "sk-slow-sail-local"
MODELS = ["moonshotai/Kimi-K2.6", "sail-lite/byte-ngram"]
LOGPROBS_INCLUDE = "message.output_text.logprobs"
STAT_KEYS = ("requests_total", "creates", "polls", "cancels_received", "completions", "idempotent_replays",
             "duplicate_samples", "faults_total", "tokens_generated")


class SlowSail:
    def __init__(self, seed: int = 0) -> None:
        self.responses: dict[str, dict[str, Any]] = {}
        self.idempotency: dict[str, str] = {}
        self.stats = dict.fromkeys(STAT_KEYS, 0)
        self.rng = random.Random(seed)
        self.next_id = 0
        self.auth = f"Bearer {API_KEY}"

    def error(self, status: int, code: str, message: str, param: str | None = None) -> web.Response:
        body = {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}
        return web.json_response(body, status=status)

    @web.middleware
    async def count_and_authorise(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.stats["requests_total"] += 1
        if request.path.startswith("/v1/") and request.headers.get("Authorization") != self.auth:
            return self.error(401, "invalid_api_key", "Incorrect API key provided")
        return await handler(request)

    def completed(self, response_id: str, created: dict[str, Any]) -> dict[str, Any]:
        """The finished response object, in the emulator's (and Sail's) shape."""
        prompt = created["raw_prompt_tokens"]
        n = created["max_output_tokens"]
        tokens = [self.rng.randrange(256) for _ in range(n)]
        block: dict[str, Any] = {"type": "output_text", "text": "", "annotations": [], "token_ids": tokens, "stop_reason": "length"}
        if LOGPROBS_INCLUDE in (created.get("include") or []):
            block["logprobs"] = [{"token_id": t, "logprob": -1.0} for t in tokens]
        self.stats["completions"] += 1
        self.stats["tokens_generated"] += n
        return {
            "id": response_id, "object": "response", "created_at": int(time.time()), "status": "completed",
            "background": True, "model": created["model"],
            "output": [{"type": "message", "id": "msg_" + response_id[5:], "status": "completed", "role": "assistant",
                        "content": [block]}],
            "usage": {"input_tokens": len(prompt), "input_tokens_details": {"cached_tokens": 0},
                      "output_tokens": n, "total_tokens": len(prompt) + n},
            "error": None, "incomplete_details": None, "metadata": created.get("metadata") or {},
            "max_output_tokens": n, "temperature": created.get("temperature", 1.0), "top_p": created.get("top_p", 1.0),
        }

    async def create(self, request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.read())
        except ValueError:
            return self.error(400, "invalid_json", "Malformed JSON body")
        if not isinstance(body, dict) or body.get("model") not in MODELS:
            return self.error(400, "model_not_found", "Unknown model", "model")
        prompt = body.get("raw_prompt_tokens")
        if not isinstance(prompt, list) or not prompt or not all(isinstance(t, int) and 0 <= t < 2**31 for t in prompt):
            return self.error(400, "invalid_value", "'raw_prompt_tokens' must be a non-empty list of token ids", "raw_prompt_tokens")
        max_tokens = body.get("max_output_tokens", 16)
        if not isinstance(max_tokens, int) or not 1 <= max_tokens <= 262_144:
            return self.error(400, "invalid_value", "'max_output_tokens' must be in 1..262144", "max_output_tokens")
        body["max_output_tokens"] = max_tokens
        key = request.headers.get("Idempotency-Key")
        if key is not None and key in self.idempotency:
            self.stats["idempotent_replays"] += 1
            return web.json_response(self.responses[self.idempotency[key]])
        self.next_id += 1
        response_id = f"resp_{self.next_id:016x}"
        if key is not None:
            self.idempotency[key] = response_id
        self.stats["creates"] += 1
        # Answered `queued` (202) like Sail; the next poll finds it done.
        queued = {"id": response_id, "object": "response", "status": "queued", "background": True, "model": body["model"],
                  "output": [], "usage": None, "error": None}
        self.responses[response_id] = self.completed(response_id, body)
        return web.json_response(queued, status=202)

    async def poll(self, request: web.Request) -> web.Response:
        self.stats["polls"] += 1
        response = self.responses.get(request.match_info["id"])
        if response is None:
            return self.error(404, "not_found", "No such response", "response_id")
        return web.json_response(response)

    async def cancel(self, request: web.Request) -> web.Response:
        self.stats["cancels_received"] += 1
        response = self.responses.get(request.match_info["id"])
        if response is None:
            return self.error(404, "not_found", "No such response", "response_id")
        return web.json_response(response)

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": m, "object": "model"} for m in MODELS]})

    async def get_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats | {"stored_responses": len(self.responses)})

    async def reset_stats(self, request: web.Request) -> web.Response:
        self.stats = dict.fromkeys(STAT_KEYS, 0)
        return web.json_response({"reset": True})

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.count_and_authorise], client_max_size=64 * 1024 * 1024)
        app.add_routes([
            web.post("/v1/responses", self.create),
            web.get("/v1/responses/{id}", self.poll),
            web.post("/v1/responses/{id}/cancel", self.cancel),
            web.get("/v1/models", self.models),
            web.get("/_stats", self.get_stats),
            web.post("/_stats/reset", self.reset_stats),
        ])
        return app


async def serve(config: dict[str, Any], stop: Any) -> None:
    runner = web.AppRunner(SlowSail(seed=config.get("seed", 0)).app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
    await site.start()
    port = runner.addresses[0][1]
    print(json.dumps({"base_url": f"http://127.0.0.1:{port}", "api_key": API_KEY, "pid": os.getpid()}), flush=True)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    import asyncio

    import probes

    config = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    probes.raise_fd_limit()

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        # Stop when standard input closes (the orchestrator closed it, or died).
        threading.Thread(target=lambda: (sys.stdin.read(), loop.call_soon_threadsafe(stop.set)), daemon=True).start()
        await serve(config, stop)

    asyncio.run(run())


if __name__ == "__main__":
    main()
