"""The engine's HTTP transport against real servers: servers that close every connection,
and the proxy environment (then reqwest carries the requests). Reuse, chunked answers and
resending on a closed pooled connection are unit-tested in rust/src/http1.rs.

``ScriptedServer`` is the stdlib HTTP server, not Sail: it stands in for a proxy or a server
with unusual framing, neither of which the emulator (hyper) produces."""

from __future__ import annotations

import asyncio

import pytest

from reliability_helpers import Reply, ScriptedServer, completed_body, prompt_for, sail_completer, sail_script


def _finished(tokens: list[int], headers: dict[str, str] | None = None):
    return sail_script(lambda rid, n: Reply.json(200, completed_body(rid, tokens, [-0.5] * len(tokens)), headers=headers or {}))


async def _sample_many(completer, n: int):
    return await asyncio.gather(*[completer(prompt_for(i)) for i in range(n)])


@pytest.mark.timeout(60)
def test_a_server_that_closes_every_connection():
    """`Connection: close` answers: each connection serves one request, none is reused."""
    script = _finished([7, 8])

    def respond(request):
        reply = script(request)
        reply.headers["Connection"] = "close"
        return reply

    with ScriptedServer(respond) as server:
        samples = asyncio.run(_sample_many(sail_completer(base_url=server.base_url, max_retries=0), 20))
    assert [s.tokens for s in samples] == [[7, 8]] * 20
    assert len(server.requests) == 40  # one create and one poll each: nothing was resent


@pytest.mark.timeout(60)
def test_proxy_environment_is_honoured(monkeypatch):
    """With HTTP_PROXY set, requests go to the proxy in absolute form (reqwest's path): the
    Sail host below does not even resolve, so only the proxy can have answered."""
    script = _finished([3, 4])
    seen: list[str] = []

    def proxy(request):
        seen.append(request.path)
        origin = "http://sail.invalid:8443"
        assert request.path.startswith(origin), request.path
        request.path = request.path[len(origin):]
        return script(request)

    with ScriptedServer(proxy) as server:
        monkeypatch.setenv("HTTP_PROXY", server.base_url)
        # A fresh origin: its HTTP clients are built (reading the environment) on first use.
        completer = sail_completer(base_url="http://sail.invalid:8443", max_retries=0)
        assert asyncio.run(completer(prompt_for(0))).tokens == [3, 4]
    assert [p.split("/v1/")[1].split("/")[0] for p in seen] == ["responses", "responses"]
    assert len(seen) == 2
