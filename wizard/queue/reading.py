"""Reading: what the API and the metrics show. These functions never write."""

from __future__ import annotations

import valkey

from .. import store
from .task import Task


def status(client: valkey.Valkey, task_id: str) -> Task | None:
    """Read one task, or None if there is no such task (or it expired)."""
    fields = client.hgetall(store.task_key(task_id))
    if not fields:
        return None
    return Task.from_hash(task_id, fields)


def read_tasks(client: valkey.Valkey, task_ids: list[str]) -> list[Task]:
    """Read several tasks in one round trip, skipping ids that expired."""
    with client.pipeline(transaction=False) as pipe:
        for task_id in task_ids:
            pipe.hgetall(store.task_key(task_id))
        rows = pipe.execute()
    return [Task.from_hash(i, f) for i, f in zip(task_ids, rows, strict=True) if f]


def recent(client: valkey.Valkey, limit: int) -> list[Task]:
    """The ``limit`` most recently submitted tasks, newest first: O(limit)."""
    return read_tasks(client, client.lrange(store.RECENT_TASKS, 0, limit - 1))


def dead_letters(client: valkey.Valkey, limit: int = 100) -> list[Task]:
    """Tasks in the dead-letter queue, newest first (at most ``limit``)."""
    return read_tasks(client, client.lrange(store.DEAD_LETTER_QUEUE, 0, limit - 1))


def counts(client: valkey.Valkey) -> dict[str, int]:
    """Queue sizes: pending, delayed, dead_letter (one round trip)."""
    with client.pipeline(transaction=False) as pipe:
        pipe.llen(store.TASK_QUEUE)
        pipe.zcard(store.DELAYED_QUEUE)
        pipe.llen(store.DEAD_LETTER_QUEUE)
        pending, delayed, dead = pipe.execute()
    return {"pending": pending, "delayed": delayed, "dead_letter": dead}


def processing_workers(client: valkey.Valkey) -> list[str]:
    """Ids of the workers that have a processing list (SCAN, not KEYS)."""
    prefix = store.PROCESSING_PREFIX
    return [key[len(prefix) :] for key in client.scan_iter(match=prefix + "*", count=500)]
