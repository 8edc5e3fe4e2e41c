"""Worker: the consumer. Take one task, run it, record the outcome; repeat.

:meth:`Worker.work_once` is one step and is what the tests drive;
:meth:`Worker.run` only loops, checks the stop flag and backs off when
Valkey is away::

    >>> worker = Worker(settings, "node-1/w1")        # doctest: +SKIP
    >>> worker.work_once()                            # doctest: +SKIP
    'complete'

While a worker holds a task, a heartbeat thread renews both its heartbeat
key (``worker:<id>``) and the task's lease, every third of a lease, even when
the operation keeps the CPU busy (the GIL is handed over every 5 ms). A
worker that stops heartbeating (killed, frozen) is dead to the reaper.

Signals (installed by :meth:`run`): the first SIGTERM stops taking tasks and
lets the current one finish within ``grace_seconds``, after which it is
handed straight back to the queue; a second SIGTERM exits at once. SIGINT is
ignored: the supervisor decides when its children stop.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from enum import Enum

import valkey

from . import faults, membership, metrics, queue, store
from .config import Settings
from .loop import call_through, run_steps
from .operations import OperationFailed, UnknownOperation, calibrate, compute

__all__ = ["GraceOver", "TaskTimeout", "Worker", "WorkOutcome", "run_worker"]

log = logging.getLogger(__name__)

#: How long a worker keeps trying to record an outcome it computed while
#: Valkey is in trouble, seconds. The reaper cannot hand the task back while
#: Valkey refuses writes either, so holding on avoids running it twice.
HOLD_RESULT_SECONDS = 60.0


class WorkOutcome(str, Enum):
    """What :meth:`Worker.work_once` did with the task it took."""

    #: Recorded with its result.
    COMPLETE = "complete"
    #: Recorded as failed: a permanent error (division by zero, bad input).
    FAILED = "failed"
    #: Handed back for another attempt.
    RETRY = "retry"
    #: Attempts used up: moved to the dead-letter queue.
    DEAD = "dead"
    #: Refused: this worker lost the lease meanwhile.
    FENCED = "fenced"
    #: Handed back, but the task had expired.
    GONE = "gone"


class TaskTimeout(Exception):
    """Raised inside an operation that ran past ``WIZARD_TASK_TIMEOUT``."""


class GraceOver(Exception):
    """Raised inside an operation still running when the grace period after
    SIGTERM ends: the task goes back to the queue for another worker."""


class Worker:
    """One consumer process's state: its id, its Valkey client, the task it
    holds (if any) and why it is stopping (if it is).

    ``client`` defaults to a new connection built from ``settings``; tests
    may pass their own.
    """

    def __init__(
        self, settings: Settings, worker_id: str, client: valkey.Valkey | None = None
    ) -> None:
        self.settings = settings
        self.worker_id = worker_id
        self.client = client or store.connect(settings, blocking_seconds=settings.block_seconds)
        self.scripts = queue.Scripts(self.client)
        self.policy = queue.RetryPolicy.from_settings(settings)
        self.lease_ms = int(settings.lease_seconds * 1000)
        self.current: queue.Claim | None = None
        self.tasks_done = 0
        self.stop_reason: str | None = None
        self._stopping = threading.Event()  # ends the heartbeat thread
        self._wake = threading.Event()  # cuts a backoff pause short on stop
        self._grace_deadline: float | None = None
        self._alarm_installed = False

    # --- one step ------------------------------------------------------

    def work_once(self) -> WorkOutcome | None:
        """Take one task (blocking up to ``block_seconds``), run it and record
        its outcome.

        Returns None if no task arrived, else what happened to it (a
        :class:`WorkOutcome`, equal to its text: ``"complete"``, ``"failed"``,
        ``"retry"``, ``"dead"``, ``"fenced"``).

        Raises:
            valkey.ConnectionError, valkey.TimeoutError: Valkey is unreachable
                while taking a task (nothing was taken) or while recording
                (the lease runs out and the reaper hands the task back).
        """
        claim = queue.take(
            self.client,
            self.scripts,
            self.worker_id,
            lease_ms=self.lease_ms,
            block_seconds=self.settings.block_seconds,
            fetch=self.settings.fetch,
        )
        if claim is None:
            return None
        self.current = claim
        try:
            return self._run(claim)
        finally:
            self.current = None

    def _run(self, claim: queue.Claim) -> WorkOutcome:
        started = time.perf_counter()
        extra = {"task_id": claim.task_id, "attempt": claim.attempt}
        log.debug("task taken", extra=extra)
        try:
            result = self._compute(claim)
        except (OperationFailed, UnknownOperation, TypeError, ValueError) as error:
            # Permanent: the same input gives the same error on every retry.
            return self._record(claim, started, error=str(error))
        except TaskTimeout:
            limit = self.settings.task_timeout
            return self._hand_back(claim, "timeout", f"ran longer than {limit:g} s", backoff=True)
        except GraceOver:
            return self._hand_back(claim, "shutdown", "worker stopped before finishing")
        return self._record(claim, started, result=result)

    def _compute(self, claim: queue.Claim) -> queue.Number:
        """Run the operation under a time limit: SIGALRM after
        ``task_timeout`` (or at the end of the grace period, if sooner)."""
        if threading.current_thread() is not threading.main_thread():
            # Signals reach only the main thread: no time limit elsewhere.
            return compute(
                claim.operation, claim.a, claim.b, work_seconds=self.settings.work_seconds
            )
        if not self._alarm_installed:
            # Once per worker: installing it twice per task was ~5 % of its CPU.
            signal.signal(signal.SIGALRM, self._on_alarm)
            self._alarm_installed = True
        signal.setitimer(signal.ITIMER_REAL, self._time_left(self.settings.task_timeout))
        try:
            return compute(
                claim.operation, claim.a, claim.b, work_seconds=self.settings.work_seconds
            )
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)

    def _time_left(self, limit: float) -> float:
        if self._grace_deadline is None:
            return limit
        return max(0.001, min(limit, self._grace_deadline - time.monotonic()))

    def _record(
        self,
        claim: queue.Claim,
        started: float,
        *,
        result: queue.Number | None = None,
        error: str | None = None,
    ) -> WorkOutcome:
        duration_ms = (time.perf_counter() - started) * 1000
        written = self._with_reconnect(
            lambda: queue.finish(
                self.client,
                self.scripts,
                claim,
                node_id=self.settings.node_id,
                result_ttl=self.settings.result_ttl,
                duration_ms=duration_ms,
                bucket=metrics.duration_bucket(duration_ms),
                result=result,
                error=error,
            )
        )
        extra = {
            "task_id": claim.task_id,
            "attempt": claim.attempt,
            "duration_ms": round(duration_ms, 3),
        }
        if not written:
            log.warning("result refused: lease lost to another worker", extra=extra)
            return WorkOutcome.FENCED
        self.tasks_done += 1
        if error is not None:
            log.info("task failed", extra={**extra, "error": error})
            return WorkOutcome.FAILED
        log.info("task complete", extra=extra)
        return WorkOutcome.COMPLETE

    def _hand_back(
        self, claim: queue.Claim, reason: str, error: str, backoff: bool = False
    ) -> WorkOutcome:
        delay = self.policy.backoff_seconds(claim.attempt) if backoff else 0.0
        hand_back = queue.HandBack(
            claim.task_id, self.worker_id, claim.attempt, reason, error, delay_seconds=delay
        )
        outcome = self._with_reconnect(
            lambda: queue.retry(self.scripts, hand_back, self.policy, node_id=self.settings.node_id)
        )
        log.info(
            f"task handed back ({outcome.value})",
            extra={"task_id": claim.task_id, "attempt": claim.attempt, "reason": reason},
        )
        return WorkOutcome(outcome.value)

    def _with_reconnect(self, write):
        """Call ``write`` until it gets through Valkey's trouble (down, full,
        loading...), for up to HOLD_RESULT_SECONDS (or one lease, if longer):
        the outcome is already computed, the heartbeat keeps renewing the
        lease as soon as Valkey takes writes again, and the fenced scripts
        make a late or repeated write harmless. After that the worker lets
        go and the reaper takes over.

        Raises:
            valkey.ValkeyError: still in trouble after that long.
        """
        within = max(HOLD_RESULT_SECONDS, self.settings.lease_seconds)
        return call_through(write, what="recording a task's outcome", within=within)

    # --- heartbeat -----------------------------------------------------

    def beat(self) -> None:
        """Write this worker's card (:func:`wizard.membership.beat`) and
        renew the lease on the task it holds (one round trip, plus one if
        holding).

        Raises:
            valkey.ConnectionError, valkey.TimeoutError: Valkey is unreachable.
        """
        claim = self.current
        card = membership.WorkerCard(
            self.worker_id,
            node=self.settings.node_id,
            pid=os.getpid(),
            at=time.time(),
            tasks_done=self.tasks_done,
            task_id=claim.task_id if claim else None,
        )
        membership.beat(self.client, card, ttl_ms=self.lease_ms)
        if claim is not None:
            queue.renew(self.client, self.scripts, claim, lease_ms=self.lease_ms)

    def _heartbeat_loop(self) -> None:
        """The heartbeat thread: beat, rest, repeat until the worker stops.
        Valkey trouble is waited out (:func:`wizard.loop.run_steps`), retried
        at least once per beat; anything else ends the process through the
        crash hook, so a worker never runs on without its heartbeat."""
        interval = self.settings.heartbeat_seconds
        chaos, node_id = self.settings.chaos_operations, self.settings.node_id

        def beat_then_rest() -> None:
            faults.inject(self.client, chaos, node_id, "heartbeat")
            self.beat()
            self._stopping.wait(interval)

        run_steps(
            beat_then_rest,
            stopped=self._stopping.is_set,
            stop=lambda reason: None,  # the main loop notices and stops
            pause=lambda seconds: self._stopping.wait(min(seconds, interval)),
            what="heartbeat",
        )

    # --- the loop ------------------------------------------------------

    def stop(self, reason: str) -> None:
        """Ask the loop to stop after the current task, giving ``reason``."""
        if self.stop_reason is None:
            self.stop_reason = reason
        self._wake.set()

    def run(self) -> None:
        """Loop over :meth:`work_once` until asked to stop.

        Backs off (growing, capped, jittered) while Valkey is unreachable and
        resumes by itself when it is back. Logs why it stops.
        """
        self._install_signal_handlers()
        try:
            self.beat()  # be seen alive before taking a first task
        except valkey.ValkeyError as error:
            if faults.valkey_trouble(error) is None:
                raise
            # The heartbeat thread reports the trouble and keeps trying.
        heartbeat = threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True)
        heartbeat.start()
        log.info("worker started", extra={"pid": os.getpid()})
        calibrate(self.settings.work_seconds)
        run_steps(
            self._step,
            stopped=lambda: self.stop_reason is not None,
            stop=self.stop,
            pause=self._wake.wait,
            what="worker step",
        )
        self._stopping.set()
        heartbeat.join(timeout=2)
        self._sign_off()
        log.info(f"worker stopping: {self.stop_reason}", extra={"pid": os.getpid()})

    def _step(self) -> None:
        chaos, node_id = self.settings.chaos_operations, self.settings.node_id
        faults.inject(self.client, chaos, node_id, "worker")
        self.work_once()

    def _sign_off(self) -> None:
        try:
            membership.sign_off(self.client, self.worker_id)
        except valkey.ValkeyError as error:
            if faults.valkey_trouble(error) is None:
                raise
            # Nothing to clean: the key expires by itself within one lease.

    def _install_signal_handlers(self) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum, frame) -> None:
        if self.stop_reason is not None:
            raise SystemExit("second SIGTERM: exiting now")
        holding = self.current
        what = f"after finishing task {holding.task_id}" if holding else "while idle"
        self.stop(f"SIGTERM {what}")
        self._grace_deadline = time.monotonic() + self.settings.grace_seconds
        if holding is not None:
            remaining, _ = signal.getitimer(signal.ITIMER_REAL)
            if remaining > 0:
                signal.setitimer(signal.ITIMER_REAL, self._time_left(remaining))

    def _on_alarm(self, signum, frame) -> None:
        if self._grace_deadline is not None and time.monotonic() >= self._grace_deadline - 0.005:
            raise GraceOver()
        raise TaskTimeout()


def run_worker(settings: Settings, worker_id: str) -> None:
    """Entry point of a worker process (a top-level function, so ``spawn``
    can start it by name). Builds its own Valkey connection in the child."""
    from . import logs

    logs.configure(settings.log_level, node=settings.node_id, process=worker_id)
    faults.install_crash_hooks()
    Worker(settings, worker_id).run()
