"""Scheduler: the reaper and the retry clock, run by one node at a time.

Every node starts a scheduler process, but only the one holding the
``scheduler:lock`` key acts (leader election with SET NX plus an expiry, as
in the Valkey SET documentation's locking pattern); when that node dies its
lock expires and another node's scheduler takes over within one lease.

Each round (:meth:`Scheduler.tick`) the leader:

1. reaps: finds tasks whose lease ran out (their worker died, froze, or
   lost Valkey) and hands them back with a backoff delay (``attempts``
   was counted when they were taken), or dead-letters them with reason
   ``worker_lost`` once ``WIZARD_MAX_ATTEMPTS`` are used up;
2. promotes retries whose backoff delay has elapsed from
   ``task_queue:delayed`` back to ``task_queue``;
3. trims the recent-tasks list, forgets workers not seen for an hour and
   dead letters that expired.

    >>> Scheduler(settings, client).tick()           # doctest: +SKIP
    {'leader': True, 'reaped': 1, 'dead_lettered': 0, 'promoted': 3}
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time

import valkey

from . import queue, store
from .config import Settings
from .worker import run_steps

log = logging.getLogger(__name__)

#: A worker missing from every heartbeat this long is dropped from the
#: registry (and from the dashboard), seconds.
FORGET_WORKER_AFTER = 3600.0

# Renew the lock only if we still hold it. KEYS: lock. ARGV: owner, ttl ms.
_RENEW_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""


class Scheduler:
    """The reaper/retry loop of one node. ``client`` defaults to a new
    connection built from ``settings``."""

    def __init__(self, settings: Settings, client: valkey.Valkey | None = None) -> None:
        self.settings = settings
        self.client = client or store.connect(settings)
        self.scripts = queue.Scripts(self.client)
        self.renew_lock = queue.Script(self.client, _RENEW_LOCK)
        self.lock_ms = int(settings.lease_seconds * 1000)
        self.stop_reason: str | None = None
        self._stopping = threading.Event()
        #: (worker id, task id) -> when it was first seen pending in a live
        #: worker's processing list (monotonic seconds).
        self._unclaimed_since: dict[tuple[str, str], float] = {}

    def is_leader(self) -> bool:
        """Take or keep the scheduler lock for one lease. True if we hold it."""
        owner = self.settings.node_id
        if self.renew_lock(keys=[store.SCHEDULER_LOCK], args=[owner, self.lock_ms]) == 1:
            return True
        return bool(self.client.set(store.SCHEDULER_LOCK, owner, nx=True, px=self.lock_ms))

    def reap(self) -> tuple[int, int]:
        """Hand back the tasks of lost workers. Returns (retried, dead-lettered)."""
        retried = dead = 0
        seen_unclaimed = set()
        for worker_id in queue.processing_workers(self.client):
            for lost in queue.find_lost(self.client, worker_id):
                if lost.worker_alive and lost.status is queue.TaskStatus.PENDING:
                    seen_unclaimed.add((lost.worker_id, lost.task_id))
                outcome = self._reap_one(lost)
                retried += outcome == "retry"
                dead += outcome == "dead"
        self._unclaimed_since = {
            key: since for key, since in self._unclaimed_since.items() if key in seen_unclaimed
        }
        return retried, dead

    def _reap_one(self, lost: queue.Lost) -> str:
        if lost.worker_alive and lost.status is queue.TaskStatus.PENDING:
            # Moved into a live worker's list but not claimed. Normally the
            # claim follows at once; an id still unclaimed a lease later lost
            # its BLMOVE reply (Valkey crashed or stalled) and must go back.
            key = (lost.worker_id, lost.task_id)
            since = self._unclaimed_since.setdefault(key, time.monotonic())
            if time.monotonic() - since < self.settings.lease_seconds:
                return "waiting"
        if lost.status is not queue.TaskStatus.RUNNING:
            # Moved but never claimed (the worker died, or lost the reply), or gone.
            queue.requeue_unclaimed(self.scripts, lost.task_id, lost.worker_id)
            return "requeued"
        outcome = queue.retry(
            self.client,
            self.scripts,
            lost.task_id,
            node_id=self.settings.node_id,
            worker_id=lost.owner,
            attempt=lost.attempt,
            reason="worker_lost",
            error=f"worker {lost.worker_id} stopped heartbeating during attempt {lost.attempt}",
            max_attempts=self.settings.max_attempts,
            delay_seconds=queue.backoff_seconds(lost.attempt, self.settings.retry_base_seconds),
            result_ttl=self.settings.result_ttl,
        )
        if outcome == "fenced":
            # The owner finished (or handed it back) between our read and now.
            self.client.lrem(store.processing_key(lost.worker_id), 1, lost.task_id)
        log.info(
            f"reaped a lost task ({outcome})",
            extra={"task_id": lost.task_id, "attempt": lost.attempt, "reason": "worker_lost"},
        )
        return outcome

    def forget(self) -> None:
        """Trim the recent-tasks list, drop long-gone workers from the
        registry and expired ids from the dead-letter queue, so none of them
        grows without bound."""
        self.client.ltrim(store.RECENT_TASKS, 0, store.RECENT_LIMIT - 1)
        now = time.time()
        for worker_id, card in self.client.hgetall(store.WORKER_REGISTRY).items():
            if now - json.loads(card).get("at", 0) > FORGET_WORKER_AFTER:
                self.client.hdel(store.WORKER_REGISTRY, worker_id)
        for task_id in self.client.lrange(store.DEAD_LETTER_QUEUE, 0, -1):
            if not self.client.exists(store.task_key(task_id)):
                self.client.lrem(store.DEAD_LETTER_QUEUE, 1, task_id)

    def tick(self) -> dict:
        """One round: if leader, reap, promote and forget. Returns counts."""
        if not self.is_leader():
            return {"leader": False}
        retried, dead = self.reap()
        promoted = queue.promote_due(self.scripts)
        self.forget()
        return {"leader": True, "reaped": retried, "dead_lettered": dead, "promoted": promoted}

    def run(self) -> None:
        """Tick every quarter lease (at most every 0.5 s) until SIGTERM."""
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, lambda *_: self._stop("SIGTERM"))
        interval = min(0.5, self.settings.lease_seconds / 4)
        log.info("scheduler started", extra={"pid": os.getpid()})

        def round_then_rest() -> None:
            self.tick()
            self._stopping.wait(interval)

        run_steps(
            round_then_rest,
            stopped=lambda: self.stop_reason is not None,
            stop=self._stop,
            pause=self._stopping.wait,
            what="scheduler round",
        )
        log.info(f"scheduler stopping: {self.stop_reason}")

    def _stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
        self._stopping.set()


def run_scheduler(settings: Settings) -> None:
    """Entry point of the scheduler process (top-level, for ``spawn``)."""
    from . import logs

    logs.configure(settings.log_level, node=settings.node_id, process="scheduler")
    Scheduler(settings).run()
