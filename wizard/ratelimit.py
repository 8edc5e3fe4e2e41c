"""Rate limiting in Valkey: every node shares one limit per client.

The limit lives in Valkey, not in a node's memory, for the same reason the
queue does: with round robin, a client's requests land on every node, so a
per-node counter would let it through N times over. The algorithm is GCRA,
the Generic Cell Rate Algorithm (ITU-T I.371, as explained for rate limiting
in Brandur Leach, "Rate Limiting, Cells, and GCRA", 2015): one key per
client holds the "theoretical arrival time" (TAT) of its next request, in
Valkey's own clock, so the check is one atomic script with no race::

    >>> limiter = RateLimiter(client, per_second=10, burst=20)   # doctest: +SKIP
    >>> limiter.check("203.0.113.7")                             # doctest: +SKIP
    Decision(retry_after=0.0, remaining=19, reset=0.1)

A ``retry_after`` of 0 means "allowed"; anything else is how long to wait,
seconds. The decision also fills the IETF ``RateLimit-Policy`` and
``RateLimit`` response headers (draft-ietf-httpapi-ratelimit-headers-10,
structured fields): the policy is a quota of ``burst`` requests over the
window that refills it, and ``r``/``t`` are what is left and when it is whole.
``q`` is what passes *back to back*: the budget comes back one request per
``1 / per_second`` seconds, not all at once when ``w`` ends, so a client that
spreads ``q`` requests over more than one interval gets one more in; ``r`` on
each answer is the exact count that would pass now::

    RateLimit-Policy: "work";q=20;w=2
    RateLimit: "work";r=19;t=1
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import valkey

from . import store
from .queue.scripts import Script

#: The GCRA script (KEYS and ARGV named in its header).
SCRIPT_PATH = Path(__file__).resolve().parent / "ratelimit.lua"

#: The name of our one policy in the RateLimit headers.
POLICY = "work"


@dataclass(frozen=True)
class Decision:
    """The limiter's answer for one request: ``retry_after`` seconds to wait
    (0.0 = allowed), ``remaining`` requests that would pass right now, and
    ``reset`` seconds until the full burst is available again."""

    retry_after: float
    remaining: int
    reset: float

    @property
    def allowed(self) -> bool:
        """True if the request may go on."""
        return self.retry_after == 0


class RateLimiter:
    """``per_second`` requests per second per client, with bursts of up to
    ``burst`` requests. Shared by every node through Valkey."""

    def __init__(self, client: valkey.Valkey, *, per_second: float, burst: int) -> None:
        self.burst = burst
        self.interval_ms = 1000.0 / per_second
        self.tolerance_ms = self.interval_ms * (burst - 1)
        self.script = Script(client, SCRIPT_PATH)

    def check(self, client_id: str) -> Decision:
        """Record a request from ``client_id`` if allowed; say what is left.

        Raises:
            valkey.ConnectionError, valkey.TimeoutError: Valkey is unreachable.
        """
        keys = [store.rate_limit_key(client_id)]
        args = {"interval_ms": self.interval_ms, "tolerance_ms": self.tolerance_ms}
        wait_ms, remaining, reset_ms = self.script(keys=keys, args=args)
        return Decision(float(wait_ms) / 1000.0, int(remaining), float(reset_ms) / 1000.0)

    def retry_after(self, client_id: str) -> float:
        """Like :meth:`check`, only the seconds to wait (0.0 = allowed)."""
        return self.check(client_id).retry_after

    def headers(self, decision: Decision) -> dict[str, str]:
        """The ``RateLimit-Policy`` and ``RateLimit`` fields for ``decision``
        (draft-ietf-httpapi-ratelimit-headers-10, §3-4): a quota ``q`` of
        ``burst`` requests per window ``w`` (the seconds an empty bucket takes
        to refill), ``r`` remaining and ``t`` seconds until the quota is whole."""
        window = max(1, math.ceil(self.burst * self.interval_ms / 1000))
        reset = math.ceil(decision.reset)
        return {
            "RateLimit-Policy": f'"{POLICY}";q={self.burst};w={window}',
            "RateLimit": f'"{POLICY}";r={decision.remaining};t={reset}',
        }
