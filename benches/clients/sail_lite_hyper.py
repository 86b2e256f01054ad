"""sail-lite's SailTokenCompleter with its direct requests sent by hyper's HTTP/1.1 client
instead of the hand-written one (rust/src/hyper_pool.rs): the transport comparison's other arm."""

from __future__ import annotations

import os

# Read by the engine when it opens its first connection pool, so set before any sample.
os.environ["SAIL_LITE_HTTP_CLIENT"] = "hyper"

from clients.sail_lite_responses import open_client

__all__ = ["open_client"]
