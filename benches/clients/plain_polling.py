"""What the two hand-rolled peers (aiohttp, OpenAI SDK) share: a plain poll schedule and
turning a finished response into TokensWithLogprobs.

The schedule is what a careful user would write: first poll 20 ms after the create (like
sail-lite's), then doubling, capped at 2 s. At latency 0 it costs the same two requests per
sample as sail-lite; for long responses it trades polls for a delay of up to 2 s."""

from __future__ import annotations

from typing import Any, Iterator

from tinker_cookbook.completers import TokensWithLogprobs

FIRST_POLL_SECONDS = 0.02
GROWTH = 2.0
CAP_SECONDS = 2.0

FINISHED_OK = ("completed", "incomplete")
FINISHED_BAD = ("failed", "cancelled", "canceled", "expired")
LOGPROBS_INCLUDE = ["message.output_text.logprobs"]
RAW_PROMPT_PLACEHOLDER = "<raw token prompt>"


class ResponseFailed(Exception):
    pass


def poll_delays() -> Iterator[float]:
    delay = FIRST_POLL_SECONDS
    while True:
        yield delay
        delay = min(delay * GROWTH, CAP_SECONDS)


def from_response_dict(response: dict[str, Any]) -> TokensWithLogprobs:
    """A finished response (parsed JSON) -> TokensWithLogprobs."""
    status = response["status"]
    if status not in FINISHED_OK:
        raise ResponseFailed(f"{response.get('id')} ended {status}: {response.get('error')}")
    message = next(item for item in response["output"] if item["type"] == "message")
    text = next(block for block in message["content"] if block["type"] == "output_text")
    logprobs = text.get("logprobs")
    return TokensWithLogprobs(
        tokens=text["token_ids"],
        maybe_logprobs=None if logprobs is None else [lp["logprob"] for lp in logprobs],
        stop_reason="length" if text.get("stop_reason") == "length" or status == "incomplete" else "stop",
    )
