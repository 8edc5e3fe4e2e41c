"""Health: what is wrong, named part by part, for ``/readyz`` and ``/cluster``.

A node is ready when Valkey takes writes and every one of its processes does
its job. Each check here turns one kind of trouble into a :class:`Problem`
that names the part and says why, so an operator reads the cause instead of
guessing::

    >>> [p] = valkey_problems({"maxmemory_policy": "noeviction",
    ...                        "used_memory": 2_000_000, "maxmemory": 1_048_576})
    >>> p.reason
    'Valkey is full: 2000000 of 1048576 bytes used (maxmemory); writes are refused'

Every check reads the current state (a heartbeat key, Valkey's memory, the
supervisor's restart counts), so the answer heals by itself within a
heartbeat (1 s) of the cause going away; a restart loop clears once the child
has run RESTART_RESET_AFTER (10 s).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

#: Restarts in a row that make a restart loop (the supervisor's RESTART_LOOP).
RESTART_LOOP = 3


@dataclass(frozen=True)
class Problem:
    """One unhealthy part: ``part`` is ``valkey``, a worker id
    (``node-1/w1``) or a node's child (``node-1/scheduler``); ``reason`` is
    one sentence."""

    part: str
    reason: str

    def to_json(self) -> dict:
        return {"part": self.part, "reason": self.reason}


def valkey_problems(memory: dict) -> list[Problem]:
    """Valkey's own trouble: an eviction policy that may drop tasks, or
    memory full (``used_memory`` at or above a non-zero ``maxmemory``:
    with ``noeviction`` every write is refused with OOM).

    ``memory`` is INFO memory (``maxmemory_policy``, ``used_memory``,
    ``maxmemory``): INFO, because the nodes' Valkey user may not read the
    configuration."""
    problems = []
    eviction = memory.get("maxmemory_policy", "")
    if eviction != "noeviction":
        problems.append(
            Problem(
                "valkey",
                f"Valkey maxmemory-policy is {eviction!r}; set it to noeviction "
                "or tasks can be evicted silently",
            )
        )
    limit = int(memory.get("maxmemory", 0))
    used = int(memory.get("used_memory", 0))
    if limit and used >= limit:
        problems.append(
            Problem(
                "valkey",
                f"Valkey is full: {used} of {limit} bytes used (maxmemory); writes are refused",
            )
        )
    return problems


def worker_problems(
    worker_ids: list[str], alive: list[bool], last_beat: dict[str, float], now: float
) -> list[Problem]:
    """Workers whose heartbeat key is gone: how long since their last beat
    (``last_beat``: worker id -> Unix seconds, from the registry's cards),
    or that they never beat."""
    problems = []
    for worker_id, has_heartbeat in zip(worker_ids, alive, strict=True):
        if has_heartbeat:
            continue
        if worker_id not in last_beat:
            # No card at all: it never beat (still starting, or failing to).
            reason = "not heartbeating yet (never seen)"
        else:
            # It beat, then stopped: not "yet", it is silent for that long.
            silent = max(0.0, now - last_beat[worker_id])
            reason = f"heartbeat stale: last beat {silent:.1f} s ago (frozen, hung or dead)"
        problems.append(Problem(worker_id, reason))
    return problems


def restart_problems(node_id: str, restarts: dict[str, str]) -> list[Problem]:
    """Children of ``node_id`` in a restart loop, from the supervisor's
    ``restarts:<node>`` hash (child name -> JSON card)."""
    problems = []
    for child, raw in sorted(restarts.items()):
        card = json.loads(raw)
        if card.get("in_a_row", 0) < RESTART_LOOP:
            continue
        part = child if "/" in child else f"{node_id}/{child}"
        problems.append(
            Problem(
                part,
                f"restart loop: died {card['in_a_row']} times in a row "
                f"(last exit code {card.get('exit_code')})",
            )
        )
    return problems


def restart_counts(restarts: dict[str, str]) -> dict[str, int]:
    """Child name -> restarts since its node started, from the hash."""
    return {child: json.loads(raw).get("restarts", 0) for child, raw in sorted(restarts.items())}
