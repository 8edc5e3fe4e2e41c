"""Scheduler: the reaper and the retry clock, run by one node at a time.

Every node starts a scheduler process, but only the one holding the
``scheduler:lock`` key acts (leader election with SET NX plus an expiry, as
in the Valkey SET documentation's locking pattern); when that node dies its
lock expires and another node's scheduler takes over within one lease.

Each round (:meth:`Scheduler.tick`) the leader:

1. reaps (unless Valkey was in trouble less than a lease ago: see
   :meth:`Scheduler.after_trouble`): finds tasks whose lease ran out (their worker died, froze, or
   lost Valkey) and hands them back with a backoff delay (``attempts``
   was counted when they were taken), or dead-letters them with reason
   ``worker_lost`` once ``WIZARD_MAX_ATTEMPTS`` are used up. A lease that
   ran out while Valkey was unreachable (a failover, a restart), or within
   a lease after it came back, is no fault of the task: that task goes
   back at once with reason ``store_unavailable``, the attempt not counted
   (see :meth:`Scheduler.forgives`);
2. promotes retries whose backoff delay has elapsed from
   ``task_queue:delayed`` back to ``task_queue``;
3. trims the recent-tasks list and dead letters that expired, and forgets
   workers not seen for five minutes (:data:`wizard.membership.STALE_AFTER`).

    >>> Scheduler(settings, client).tick()           # doctest: +SKIP
    {'leader': True, 'reaped': 1, 'dead_lettered': 0, 'promoted': 3}
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path

import valkey

from . import faults, membership, queue, store
from .config import Settings
from .loop import run_steps

log = logging.getLogger(__name__)

#: The script that renews the lock for its holder only (KEYS and ARGV named
#: in its header).
LOCK_SCRIPT_PATH = Path(__file__).resolve().parent / "scheduler_lock.lua"


class Scheduler:
    """The reaper/retry loop of one node. ``client`` defaults to a new
    connection built from ``settings``."""

    def __init__(self, settings: Settings, client: valkey.Valkey | None = None) -> None:
        self.settings = settings
        self.client = client or store.connect(settings)
        self.scripts = queue.Scripts(self.client)
        self.renew_lock = queue.Script(self.client, LOCK_SCRIPT_PATH)
        self.policy = queue.RetryPolicy.from_settings(settings)
        self.lock_ms = int(settings.lease_seconds * 1000)
        self.stop_reason: str | None = None
        self._stopping = threading.Event()
        #: (worker id, task id) -> when it was first seen pending in a live
        #: worker's processing list (monotonic seconds).
        self._unclaimed_since: dict[tuple[str, str], float] = {}
        #: No reaping before this time (monotonic seconds): see after_trouble().
        self.quiet_until = 0.0
        #: A lease that ran out before this (Valkey's clock, Unix ms) ran out
        #: in or just after Valkey trouble this scheduler saw: see forgives().
        self.forgive_before_ms = 0
        self._trouble_seen = False

    def after_trouble(self, seconds: float) -> None:
        """Note Valkey trouble seen by this scheduler, then wait ``seconds``.

        Leases that ran out while Valkey was in trouble (full, loading,
        paused, unreachable) say nothing about the workers: none of them
        could renew. So the reaper holds off until one whole lease after the
        last trouble it saw, giving every live worker time to renew its lease
        (and record the result it kept meanwhile); a worker that really died
        has its task handed back one lease later than usual."""
        self.quiet_until = time.monotonic() + seconds + self.settings.lease_seconds
        self._trouble_seen = True
        self._stopping.wait(seconds)

    def forgives(self, lost: queue.Lost) -> bool:
        """True if ``lost``'s lease ran out while Valkey was in trouble, or
        within one lease after this scheduler saw it answer again: its
        worker could not renew it (it may still be waiting out its backoff,
        or its reply was lost), so the attempt is not the task's fault and
        is not counted (a failover must never dead-letter a task)."""
        expires = lost.lease_expires_ms
        return expires is not None and expires <= self.forgive_before_ms

    def _note_recovery(self) -> None:
        """After trouble, at the first round that reaches Valkey: forgive
        leases that run out up to one lease from now (Valkey's clock)."""
        if not self._trouble_seen:
            return
        seconds, micros = self.client.time()
        self.forgive_before_ms = seconds * 1000 + micros // 1000 + self.lock_ms
        self._trouble_seen = False

    def is_leader(self) -> bool:
        """Take or keep the scheduler lock for one lease. True if we hold it."""
        owner = self.settings.node_id
        args = {"owner": owner, "ttl_ms": self.lock_ms}
        if self.renew_lock(keys=[store.SCHEDULER_LOCK], args=args) == 1:
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
                retried += outcome is queue.RetryOutcome.RETRY
                dead += outcome is queue.RetryOutcome.DEAD
        self._unclaimed_since = {
            key: since for key, since in self._unclaimed_since.items() if key in seen_unclaimed
        }
        return retried, dead

    def _reap_one(self, lost: queue.Lost) -> queue.RetryOutcome | None:
        """Hand back one lost task. Returns what retry() did, or None when
        the task was only requeued (never claimed) or is left waiting."""
        if lost.worker_alive and lost.status is queue.TaskStatus.PENDING:
            # Moved into a live worker's list but not claimed. Normally the
            # claim follows at once; an id still unclaimed a lease later lost
            # its BLMOVE reply (Valkey crashed or stalled) and must go back.
            key = (lost.worker_id, lost.task_id)
            since = self._unclaimed_since.setdefault(key, time.monotonic())
            if time.monotonic() - since < self.settings.lease_seconds:
                return None
        if lost.status is not queue.TaskStatus.RUNNING:
            # Moved but never claimed (the worker died, or lost the reply), or gone.
            queue.requeue_unclaimed(self.scripts, lost.task_id, lost.worker_id)
            return None
        hand_back = self._hand_back(lost)
        outcome = queue.retry(self.scripts, hand_back, self.policy, node_id=self.settings.node_id)
        if outcome is queue.RetryOutcome.FENCED:
            # The owner finished (or handed it back) between our read and now.
            queue.drop_from_processing(self.client, lost.worker_id, lost.task_id)
        log.info(
            f"reaped a lost task ({outcome.value})",
            extra={"task_id": lost.task_id, "attempt": lost.attempt, "reason": hand_back.reason},
        )
        return outcome

    def _hand_back(self, lost: queue.Lost) -> queue.HandBack:
        """How to give ``lost`` back: at once and not counted if its lease
        ran out in Valkey trouble (:meth:`forgives`), else after a backoff
        and counted."""
        if self.forgives(lost):
            return queue.HandBack(
                lost.task_id,
                worker_id=lost.owner,
                attempt=lost.attempt,
                reason="store_unavailable",
                error=f"attempt {lost.attempt}'s lease ran out while Valkey was unreachable",
                only_if_expired=True,
                count_attempt=False,
            )
        return queue.HandBack(
            lost.task_id,
            worker_id=lost.owner,
            attempt=lost.attempt,
            reason="worker_lost",
            error=f"worker {lost.worker_id} stopped heartbeating during attempt {lost.attempt}",
            delay_seconds=self.policy.backoff_seconds(lost.attempt),
            only_if_expired=True,
        )

    def forget(self) -> None:
        """Trim the recent-tasks list, drop long-gone workers from the
        registry and expired ids from the dead-letter queue, so none of them
        grows without bound."""
        queue.trim(self.client)
        membership.forget_stale(self.client)

    def tick(self) -> dict:
        """One round: if leader, reap, promote and forget. Returns counts."""
        self._note_recovery()
        if not self.is_leader():
            return {"leader": False}
        retried = dead = 0
        if time.monotonic() >= self.quiet_until:
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
            chaos = self.settings.chaos_operations
            faults.inject(self.client, chaos, self.settings.node_id, "scheduler")
            self.tick()
            self._stopping.wait(interval)

        run_steps(
            round_then_rest,
            stopped=lambda: self.stop_reason is not None,
            stop=self._stop,
            pause=self.after_trouble,
            what="scheduler round",
        )
        log.info(f"scheduler stopping: {self.stop_reason}")

    def _stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
        self._stopping.set()


def run_scheduler(settings: Settings) -> None:
    """Entry point of the scheduler process (top-level, for ``spawn``)."""
    from . import logs, proctitle

    logs.configure(settings.log_level, node=settings.node_id, process="scheduler")
    faults.install_crash_hooks()
    proctitle.name(node_id=settings.node_id, role="scheduler")
    Scheduler(settings).run()
