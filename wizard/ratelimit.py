"""Rate limiting in Valkey: every node shares one limit per client.

The limit lives in Valkey, not in a node's memory, for the same reason the
queue does: with round robin, a client's requests land on every node, so a
per-node counter would let it through N times over. The algorithm is GCRA,
the Generic Cell Rate Algorithm (ITU-T I.371, as explained for rate limiting
in Brandur Leach, "Rate Limiting, Cells, and GCRA", 2015): one key per
client holds the "theoretical arrival time" (TAT) of its next request, in
Valkey's own clock, so the check is one atomic script with no race::

    >>> limiter = RateLimiter(client, per_second=10, burst=20)   # doctest: +SKIP
    >>> limiter.retry_after("203.0.113.7")                       # doctest: +SKIP
    0.0

A return of 0 means "allowed"; anything else is how long to wait, seconds.
"""

from __future__ import annotations

from pathlib import Path

import valkey

from . import store
from .queue.scripts import Script

#: The GCRA script (KEYS and ARGV named in its header).
SCRIPT_PATH = Path(__file__).resolve().parent / "ratelimit.lua"


class RateLimiter:
    """``per_second`` requests per second per client, with bursts of up to
    ``burst`` requests. Shared by every node through Valkey."""

    def __init__(self, client: valkey.Valkey, *, per_second: float, burst: int) -> None:
        self.interval_ms = 1000.0 / per_second
        self.tolerance_ms = self.interval_ms * (burst - 1)
        self.script = Script(client, SCRIPT_PATH)

    def retry_after(self, client_id: str) -> float:
        """Record a request from ``client_id`` if allowed. Returns 0.0 when it
        is, else the seconds until it would be.

        Raises:
            valkey.ConnectionError, valkey.TimeoutError: Valkey is unreachable.
        """
        keys = [store.rate_limit_key(client_id)]
        args = {"interval_ms": self.interval_ms, "tolerance_ms": self.tolerance_ms}
        wait_ms = self.script(keys=keys, args=args)
        return float(wait_ms) / 1000.0
