"""Views: JSON documents the API builds from several sources at once.

:func:`cluster_view` is ``GET /cluster``: the nodes, their workers with their
heartbeats (from :mod:`wizard.membership`), the queue's counts (from
:mod:`wizard.metrics`) and which Valkey server is the primary (from
:func:`wizard.store.primary_info`), in one document the dashboard draws.
"""

from __future__ import annotations

import time

import valkey

from . import health, membership, metrics, store


def cluster_view(client: valkey.Valkey, *, heartbeat_seconds: float) -> dict:
    """``{"time", "nodes": [{"node", "alive", "restarts", "workers": [...]}],
    "queue", "valkey": {"primary", "via", "role", "replicas"},
    "problems": [{"part", "reason"}],
    "processes": [{"name", "pid", "node", "role", "at"}]}``.

    A worker is alive when its heartbeat key exists and it beat within three
    beats (``3 * heartbeat_seconds``); a node is alive when one of its
    workers is. Workers silent for :data:`membership.STALE_AFTER` seconds
    are left out. Times are Unix seconds; ages are seconds. ``problems``
    names every unhealthy part (:mod:`wizard.health`): Valkey full or
    evicting, a stale heartbeat, a process in a restart loop.
    ``processes`` lists every process recorded in the registry
    (:func:`membership.process_table`): each node's supervisor, API,
    workers and scheduler, and, on the local cluster, nginx and Valkey.

    Raises:
        valkey.ConnectionError, valkey.TimeoutError: Valkey is unreachable.
    """
    primary = store.primary_info(client)
    snapshot = metrics.queue_snapshot(client)
    cards = membership.cards(client)
    beating = membership.alive(client, [card.worker_id for card in cards])
    node_ids = sorted({card.node for card in cards})
    with client.pipeline(transaction=False) as pipe:
        pipe.info("memory")
        for node_id in node_ids:
            pipe.hgetall(store.restarts_key(node_id))
        memory, *per_node = pipe.execute()
    restarts = dict(zip(node_ids, per_node, strict=True))
    problems = health.valkey_problems(memory)
    now = time.time()
    nodes: dict[str, dict] = {}
    silent_after = 3 * heartbeat_seconds
    for card, has_heartbeat in zip(cards, beating, strict=True):
        age = round(card.age_seconds(now), 3)
        if age > membership.STALE_AFTER:
            continue
        is_alive = has_heartbeat and age <= silent_after
        if not is_alive:
            stale = f"heartbeat stale: last beat {age:.1f} s ago"
            problems.append(health.Problem(card.worker_id, stale))
        counts = health.restart_counts(restarts.get(card.node, {}))
        blank = {"node": card.node, "alive": False, "restarts": counts, "workers": []}
        node = nodes.setdefault(card.node, blank)
        node["alive"] = node["alive"] or is_alive
        node["workers"].append(
            {
                "worker": card.worker_id,
                "alive": is_alive,
                "pid": card.pid,
                "started": card.started,
                "heartbeat_age_seconds": age,
                "tasks_done": card.tasks_done,
                "current_task": card.task_id,
            }
        )
    for node_id in nodes:
        problems.extend(health.restart_problems(node_id, restarts.get(node_id, {})))
    processes = membership.process_table(client)
    return {
        "time": now,
        "nodes": list(nodes.values()),
        "queue": snapshot,
        "valkey": primary,
        "problems": [p.to_json() for p in problems],
        "processes": processes,
    }
