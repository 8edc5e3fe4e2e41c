"""Recovery: the reaper's side. Find tasks whose worker lost them, hand them
back, move due retries into the queue, and trim what would grow forever.

A running task is lost when its lease expired by Valkey's clock (``TIME``),
so nodes with skewed clocks still agree on who holds a lease.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import valkey

from .. import membership, store
from .scripts import Scripts
from .task import TaskStatus


@dataclass(frozen=True)
class Lost:
    """A task found in a processing list whose worker has lost it.

    ``owner`` and ``attempt`` are the lease holder and fencing token seen at
    the time, passed on to :func:`~wizard.queue.retry` so a late finish
    still wins. ``lease_expires_ms`` is when its lease ran out (Valkey's
    clock, Unix milliseconds; None if it has none).
    """

    task_id: str
    worker_id: str
    owner: str
    attempt: int
    status: TaskStatus
    worker_alive: bool = False
    lease_expires_ms: int | None = None


@dataclass(frozen=True)
class _UnclaimArgs:
    """ARGV of ``unclaim.lua``."""

    task_id: str


@dataclass(frozen=True)
class _PromoteArgs:
    """ARGV of ``promote.lua``."""

    now: str
    limit: int


def find_lost(client: valkey.Valkey, worker_id: str) -> list[Lost]:
    """Tasks in ``worker_id``'s processing list that must be handed back.

    A running task is lost when its lease expired by Valkey's clock: its
    worker stopped renewing it (dead, frozen, or cut off from Valkey). A
    task still ``pending`` in a processing list was moved but never claimed:
    reported with ``worker_alive`` telling whether the worker heartbeats.
    A live worker is usually claiming it this very moment, but if the reply
    to its BLMOVE was lost (Valkey crashed or stalled), the id stays there
    unclaimed, and only the caller, seeing it again a lease later, can tell.
    Ids of ended or vanished tasks are stale and reported too. Reads only.
    """
    processing = store.processing_key(worker_id)
    with client.pipeline(transaction=False) as pipe:
        pipe.lrange(processing, 0, -1)
        membership.queue_is_alive(pipe, worker_id)
        pipe.time()
        task_ids, alive, (seconds, micros) = pipe.execute()
    if not task_ids:
        return []
    now_ms = seconds * 1000 + micros // 1000
    with client.pipeline(transaction=False) as pipe:
        for task_id in task_ids:
            fields = ("status", "lease_owner", "attempts", "lease_expires")
            pipe.hmget(store.task_key(task_id), *fields)
        rows = pipe.execute()
    lost = []
    for task_id, (state, owner, attempts, expires) in zip(task_ids, rows, strict=True):
        if state is None:
            lost.append(Lost(task_id, worker_id, "", 0, TaskStatus.FAILED))
            continue
        expires_ms = None if expires is None else int(expires)
        expired = expires_ms is not None and expires_ms < now_ms
        if state == TaskStatus.RUNNING.value and not expired:
            continue
        record = Lost(task_id, worker_id, owner or "", int(attempts or 0), TaskStatus(state))
        lost.append(
            dataclasses.replace(record, worker_alive=bool(alive), lease_expires_ms=expires_ms)
        )
    return lost


def requeue_unclaimed(scripts: Scripts, task_id: str, worker_id: str) -> bool:
    """Move a never-claimed (or vanished) id out of ``worker_id``'s
    processing list; a pending task goes back to the front of the queue.
    Returns True if it was requeued."""
    keys = [store.processing_key(worker_id), store.task_key(task_id), store.TASK_QUEUE]
    return scripts.unclaim(keys=keys, args=_UnclaimArgs(task_id)) == 1


def drop_from_processing(client: valkey.Valkey, worker_id: str, task_id: str) -> None:
    """Remove ``task_id`` from ``worker_id``'s processing list (a stale
    trace: its owner finished or handed it back meanwhile)."""
    client.lrem(store.processing_key(worker_id), 1, task_id)


def promote_due(scripts: Scripts, *, limit: int = 500) -> int:
    """Move up to ``limit`` retries whose backoff has elapsed back into the
    queue. Returns how many moved."""
    keys = [store.DELAYED_QUEUE, store.TASK_QUEUE]
    return scripts.promote(keys=keys, args=_PromoteArgs(repr(time.time()), limit))


def trim(client: valkey.Valkey) -> None:
    """Keep the recent-tasks list at ``store.RECENT_LIMIT`` ids and drop
    expired ids from the dead-letter queue, so neither grows without bound.

    Raises:
        valkey.ConnectionError, valkey.TimeoutError: Valkey is unreachable.
    """
    client.ltrim(store.RECENT_TASKS, 0, store.RECENT_LIMIT - 1)
    for task_id in client.lrange(store.DEAD_LETTER_QUEUE, 0, -1):
        if not client.exists(store.task_key(task_id)):
            client.lrem(store.DEAD_LETTER_QUEUE, 1, task_id)
