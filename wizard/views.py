"""Views: JSON documents the API builds from several sources at once.

:func:`cluster_view` is ``GET /cluster``: the nodes, their workers with their
heartbeats (from :mod:`wizard.membership`), the queue's counts (from
:mod:`wizard.metrics`) and which Valkey server is the primary (from
:func:`wizard.store.primary_info`), in one document the dashboard draws.
"""

from __future__ import annotations

import time

import valkey

from . import membership, metrics, store


def cluster_view(client: valkey.Valkey, *, heartbeat_seconds: float) -> dict:
    """``{"time", "nodes": [{"node", "alive", "workers": [...]}], "queue",
    "valkey": {"primary", "via", "role", "replicas"}}``.

    A worker is alive when its heartbeat key exists and it beat within three
    beats (``3 * heartbeat_seconds``); a node is alive when one of its
    workers is. Workers silent for :data:`membership.STALE_AFTER` seconds
    are left out. Times are Unix seconds; ages are seconds.

    Raises:
        valkey.ConnectionError, valkey.TimeoutError: Valkey is unreachable.
    """
    primary = store.primary_info(client)
    snapshot = metrics.queue_snapshot(client)
    cards = membership.cards(client)
    beating = membership.alive(client, [card.worker_id for card in cards])
    now = time.time()
    nodes: dict[str, dict] = {}
    silent_after = 3 * heartbeat_seconds
    for card, has_heartbeat in zip(cards, beating, strict=True):
        age = round(card.age_seconds(now), 3)
        if age > membership.STALE_AFTER:
            continue
        is_alive = has_heartbeat and age <= silent_after
        node = nodes.setdefault(card.node, {"node": card.node, "alive": False, "workers": []})
        node["alive"] = node["alive"] or is_alive
        node["workers"].append(
            {
                "worker": card.worker_id,
                "alive": is_alive,
                "pid": card.pid,
                "heartbeat_age_seconds": age,
                "tasks_done": card.tasks_done,
                "current_task": card.task_id,
            }
        )
    return {"time": now, "nodes": list(nodes.values()), "queue": snapshot, "valkey": primary}
