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

import json
import logging
import os
import random
import signal
import threading
import time
from collections.abc import Callable

import valkey

from . import queue, store
from .config import Settings
from .operations import OperationFailed, UnknownOperation, compute

log = logging.getLogger(__name__)

#: Longest pause between reconnection attempts to Valkey, seconds.
MAX_RECONNECT_DELAY = 5.0

#: Errors that mean "Valkey is unreachable right now" (BusyLoadingError,
#: raised while Valkey reloads its AOF, is a ConnectionError).
VALKEY_DOWN = (valkey.ConnectionError, valkey.TimeoutError)


class TaskTimeout(Exception):
    """Raised inside an operation that ran past ``WIZARD_TASK_TIMEOUT``."""


class GraceOver(Exception):
    """Raised inside an operation still running when the grace period after
    SIGTERM ends: the task goes back to the queue for another worker."""


def reconnect_delay(failures: int) -> float:
    """Growing, capped, jittered delay before reconnection attempt
    ``failures`` (1, 2, ...), seconds: "full jitter" between 0.05 s and
    min(MAX_RECONNECT_DELAY, 0.1 * 2**failures), as in the AWS Architecture
    Blog, "Exponential Backoff And Jitter" (2015)."""
    ceiling = min(MAX_RECONNECT_DELAY, 0.1 * 2**failures)
    return max(0.05, random.uniform(0, ceiling))


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
        self.lease_ms = int(settings.lease_seconds * 1000)
        self.current: queue.Claim | None = None
        self.tasks_done = 0
        self.stop_reason: str | None = None
        self._stopping = threading.Event()  # ends the heartbeat thread
        self._wake = threading.Event()  # cuts a backoff pause short on stop
        self._grace_deadline: float | None = None
        self._alarm_installed = False

    # --- one step ------------------------------------------------------

    def work_once(self) -> str | None:
        """Take one task (blocking up to ``block_seconds``), run it and record
        its outcome.

        Returns None if no task arrived, else what happened to it:
        ``"complete"``, ``"failed"`` (a permanent error), ``"retry"`` or
        ``"dead"`` (handed back, or dead-lettered), or ``"fenced"`` (this
        worker lost the lease meanwhile and its write was refused).

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

    def _run(self, claim: queue.Claim) -> str:
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
    ) -> str:
        duration_ms = (time.perf_counter() - started) * 1000
        written = self._with_reconnect(
            lambda: queue.finish(
                self.client,
                self.scripts,
                claim,
                node_id=self.settings.node_id,
                result_ttl=self.settings.result_ttl,
                duration_ms=duration_ms,
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
            return "fenced"
        self.tasks_done += 1
        if error is not None:
            log.info("task failed", extra={**extra, "error": error})
            return "failed"
        log.info("task complete", extra=extra)
        return "complete"

    def _hand_back(self, claim: queue.Claim, reason: str, error: str, backoff: bool = False) -> str:
        delay = queue.backoff_seconds(claim.attempt, self.settings.retry_base_seconds)
        outcome = self._with_reconnect(
            lambda: queue.retry(
                self.client,
                self.scripts,
                claim.task_id,
                node_id=self.settings.node_id,
                worker_id=self.worker_id,
                attempt=claim.attempt,
                reason=reason,
                error=error,
                max_attempts=self.settings.max_attempts,
                delay_seconds=delay if backoff else 0,
                result_ttl=self.settings.result_ttl,
            )
        )
        log.info(
            f"task handed back ({outcome})",
            extra={"task_id": claim.task_id, "attempt": claim.attempt, "reason": reason},
        )
        return outcome

    def _with_reconnect(self, write):
        """Call ``write`` until it gets through, for at most one lease: the
        outcome is already computed, and the fenced scripts make a repeat
        harmless. After that the lease is gone and the reaper takes over.

        Raises:
            valkey.ConnectionError, valkey.TimeoutError: still unreachable.
        """
        deadline = time.monotonic() + self.settings.lease_seconds
        failures = 0
        while True:
            try:
                return write()
            except VALKEY_DOWN:
                # Valkey hiccup: keep the result and try again, within the lease.
                failures += 1
                if time.monotonic() > deadline:
                    raise
                time.sleep(reconnect_delay(failures))

    # --- heartbeat -----------------------------------------------------

    def beat(self) -> None:
        """Refresh this worker's heartbeat key and registry entry and renew
        the lease on the task it holds (one round trip, plus one if holding).

        Raises:
            valkey.ConnectionError, valkey.TimeoutError: Valkey is unreachable.
        """
        claim = self.current
        card = json.dumps(
            {
                "node": self.settings.node_id,
                "pid": os.getpid(),
                "at": time.time(),
                "tasks_done": self.tasks_done,
                "task_id": claim.task_id if claim else None,
            }
        )
        with self.client.pipeline(transaction=False) as pipe:
            pipe.set(store.heartbeat_key(self.worker_id), card, px=self.lease_ms)
            pipe.hset(store.WORKER_REGISTRY, self.worker_id, card)
            pipe.execute()
        if claim is not None:
            queue.renew(self.client, self.scripts, claim, lease_ms=self.lease_ms)

    def _heartbeat_loop(self) -> None:
        interval = self.settings.heartbeat_seconds
        while not self._stopping.is_set():
            try:
                self.beat()
            except VALKEY_DOWN as error:
                # The main loop reports the outage and backs off; just retry.
                log.debug("heartbeat missed", extra={"error": str(error)})
            self._stopping.wait(interval)

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
        except VALKEY_DOWN:
            # The loop below reports the outage and waits for Valkey.
            pass
        heartbeat = threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True)
        heartbeat.start()
        log.info("worker started", extra={"pid": os.getpid()})
        run_steps(
            self.work_once,
            stopped=lambda: self.stop_reason is not None,
            stop=self.stop,
            pause=self._wake.wait,
            what="worker step",
        )
        self._stopping.set()
        heartbeat.join(timeout=2)
        self._sign_off()
        log.info(f"worker stopping: {self.stop_reason}", extra={"pid": os.getpid()})

    def _sign_off(self) -> None:
        try:
            self.client.delete(store.heartbeat_key(self.worker_id))
        except VALKEY_DOWN:
            # Nothing to clean: the key expires by itself within one lease.
            pass

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


def run_steps(
    step: Callable[[], object],
    *,
    stopped: Callable[[], bool],
    stop: Callable[[str], None],
    pause: Callable[[float], object],
    what: str,
) -> None:
    """Call ``step`` until ``stopped()``: the loop of the worker and of the
    scheduler. While Valkey is unreachable it backs off (growing, capped,
    jittered: :func:`reconnect_delay`) and resumes by itself when Valkey is
    back; ``pause(seconds)`` waits, and returns early when a stop is asked.
    Any other error is logged with its traceback (the one broad ``except`` of
    a consumer) and the loop goes on after a second. If the parent process
    (the supervisor) disappears, ``stop`` is called with that reason."""
    parent = os.getppid()
    failures = 0
    while not stopped():
        try:
            step()
            failures = 0
        except VALKEY_DOWN as error:
            failures += 1
            delay = reconnect_delay(failures)
            log.warning(
                "Valkey unreachable; backing off",
                extra={"error": str(error), "delay_seconds": round(delay, 3)},
            )
            pause(delay)
        except Exception:
            # Boundary of one step: log the traceback, keep serving.
            log.exception(f"unexpected error in a {what}")
            pause(1.0)
        if os.getppid() != parent:
            stop("the supervisor is gone")


def run_worker(settings: Settings, worker_id: str) -> None:
    """Entry point of a worker process (a top-level function, so ``spawn``
    can start it by name). Builds its own Valkey connection in the child."""
    from . import logs

    logs.configure(settings.log_level, node=settings.node_id, process=worker_id)
    Worker(settings, worker_id).run()
