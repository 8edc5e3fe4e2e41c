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

import valkey

from . import store

# GCRA. KEYS: the client's key. ARGV: emission interval ms (1000 / rate),
# burst tolerance ms (interval * (burst - 1)). Returns 0 if the request is
# allowed (and records it), else the milliseconds until it would be.
_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then
  tat = now
end
local allowed_at = tat - tolerance
if now < allowed_at then
  return math.ceil(allowed_at - now)
end
local next_tat = tat + interval
redis.call('SET', KEYS[1], next_tat, 'PX', math.ceil(next_tat - now))
return 0
"""


class RateLimiter:
    """``per_second`` requests per second per client, with bursts of up to
    ``burst`` requests. Shared by every node through Valkey."""

    def __init__(self, client: valkey.Valkey, *, per_second: float, burst: int) -> None:
        self.interval_ms = 1000.0 / per_second
        self.tolerance_ms = self.interval_ms * (burst - 1)
        self.script = client.register_script(_GCRA)

    def retry_after(self, client_id: str) -> float:
        """Record a request from ``client_id`` if allowed. Returns 0.0 when it
        is, else the seconds until it would be.

        Raises:
            valkey.ConnectionError, valkey.TimeoutError: Valkey is unreachable.
        """
        keys = [store.rate_limit_key(client_id)]
        wait_ms = self.script(keys=keys, args=[self.interval_ms, self.tolerance_ms])
        return float(wait_ms) / 1000.0
