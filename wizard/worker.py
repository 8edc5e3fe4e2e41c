"""Worker: the consumer. Take a task, run it, record the outcome; repeat.

:meth:`Worker.work_once` takes, runs and records, and is what the tests
drive; :meth:`Worker.run` loops over :meth:`Worker.step`, which sends the
outcome of the task just run together with the take of the next, so a busy
worker costs one round trip to Valkey per task. It never takes a task while
another runs (no prefetching): a task waiting in a worker's hands is a task
another idle worker could have run, and one more to redo if it dies.

With ``WIZARD_BATCH=N`` a step takes up to N tasks at once and the next one
records them all: N times fewer round trips, but if the worker dies the
whole batch waits out a lease, and the last task of a batch starts only
when those before it have run::

    >>> worker = Worker(settings, "node-1/w1")        # doctest: +SKIP
    >>> worker.work_once()                            # doctest: +SKIP
    'complete'

Counters and durations for ``/metrics`` stay in the worker's memory and go
to Valkey once a second with the heartbeat (:class:`wizard.metrics.Tally`).

While a worker holds tasks, a heartbeat thread renews both its heartbeat
key (``worker:<id>``) and the tasks' leases, every third of a lease, even when
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
from dataclasses import dataclass
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
        self.taking = queue.Taking(
            node_id=settings.node_id,
            lease_ms=self.lease_ms,
            block_seconds=settings.block_seconds,
            result_ttl=settings.result_ttl,
            batch=settings.batch,
            fetch=settings.fetch,
        )
        #: When this worker started, Unix seconds (shown on its card).
        self.started = time.time()
        #: The task running now, if any.
        self.current: queue.Claim | None = None
        #: Every task taken by the last step and not yet recorded: the
        #: heartbeat renews their leases.
        self.held: tuple[queue.Claim, ...] = ()
        #: Outcomes computed but not yet sent (they go with the next step).
        self.unsent: list[_Ran] = []
        #: Task counts and durations not yet added to Valkey.
        self.tally = metrics.Tally()
        #: Valkey's clock minus this one, microseconds, measured at each beat
        #: (None before the first): a claim is stamped with it.
        self.clock_offset_us: float | None = None
        self.tasks_done = 0
        self.stop_reason: str | None = None
        self._stopping = threading.Event()  # ends the heartbeat thread
        self._wake = threading.Event()  # cuts a backoff pause short on stop
        self._grace_deadline: float | None = None  # time.monotonic() seconds
        self._task_deadline: float | None = None  # time.monotonic() seconds
        #: The last task taken and what became of it (None: not recorded,
        #: e.g. Valkey was unreachable): what the stop log line reports.
        self.last_task: tuple[str, WorkOutcome | None] | None = None

    # --- one step ------------------------------------------------------

    def work_once(self) -> WorkOutcome | None:
        """Take tasks (up to ``WIZARD_BATCH``, blocking up to
        ``block_seconds``), run them, record their outcomes and add the
        counts to Valkey: everything one task needs, done at once, which is
        how tests and a reader step through it. :meth:`run` does the same
        with one round trip per task (:meth:`step`).

        Returns None if no task arrived, else what happened to the first
        one (a :class:`WorkOutcome`, equal to its text: ``"complete"``,
        ``"failed"``, ``"retry"``, ``"dead"``, ``"fenced"``).

        Raises:
            valkey.ConnectionError, valkey.TimeoutError: Valkey is unreachable
                while taking a task (nothing was taken) or while recording
                (the lease runs out and the reaper hands the task back).
        """
        outcomes = self.step()
        if self.unsent:
            outcomes += self._with_reconnect(lambda: self.step(take=False))
        self.tally.flush(self.scripts, self.settings.node_id)
        return outcomes[0] if outcomes else None

    def step(self, take: bool = True) -> list[WorkOutcome]:
        """One round trip and the tasks it brings: send the outcomes of the
        tasks run since the last step and take the next ones
        (:func:`wizard.queue.step`), then run them. Their outcomes wait in
        :attr:`unsent` for the next step, so a busy worker talks to Valkey
        once per task (once per batch with ``WIZARD_BATCH``).

        Returns what happened to each task whose fate is now known: those
        just recorded (complete, failed, fenced) and those handed back.

        Raises:
            valkey.ConnectionError, valkey.TimeoutError: Valkey is
                unreachable; the outcomes stay in :attr:`unsent` and are
                sent again with the next step (a repeat is harmless).
        """
        take = take and self.stop_reason is None
        reply = queue.step(
            self.client,
            self.scripts,
            self.worker_id,
            self.taking,
            outcomes=[ran.outcome for ran in self.unsent],
            take=take,
            now_us=self._valkey_now_us(),
        )
        settled = self._settle(reply.written)
        self.held = reply.claims
        return settled + self._run_all(reply.claims)

    def _valkey_now_us(self) -> int | None:
        if self.clock_offset_us is None:
            return None
        return int(time.time() * 1_000_000 + self.clock_offset_us)

    def _settle(self, written: tuple[bool, ...]) -> list[WorkOutcome]:
        """Log and count the outcomes the last step recorded."""
        sent, self.unsent = self.unsent[: len(written)], self.unsent[len(written) :]
        settled = []
        for ran, ok in zip(sent, written, strict=True):
            claim = ran.outcome.claim
            extra = {
                "task_id": claim.task_id,
                "attempt": claim.attempt,
                "duration_ms": round(ran.duration_ms, 3),
            }
            if not ok:
                log.warning("result refused: lease lost to another worker", extra=extra)
                settled.append(WorkOutcome.FENCED)
            else:
                self.tasks_done += 1
                self.tally.task_ended(claim.operation, ran.status.value, ran.duration_ms)
                if ran.outcome.error is not None:
                    log.info("task failed", extra={**extra, "error": ran.outcome.error})
                    settled.append(WorkOutcome.FAILED)
                else:
                    log.info("task complete", extra=extra)
                    settled.append(WorkOutcome.COMPLETE)
            if self.last_task is not None and self.last_task[0] == claim.task_id:
                self.last_task = (claim.task_id, settled[-1])
        return settled

    def _run_all(self, claims: tuple[queue.Claim, ...]) -> list[WorkOutcome]:
        """Run ``claims`` one after the other. Those still waiting when a
        stop is asked go back to the queue as if never taken."""
        handed_back = []
        for n, claim in enumerate(claims):
            if self.stop_reason is not None:
                self._release(list(claims[n:]))
                break
            self.current = claim
            self.last_task = (claim.task_id, None)
            try:
                found = self._run(claim)
            finally:
                self.current = None
            if found is not None:
                self.last_task = (claim.task_id, found)
                handed_back.append(found)
        return handed_back

    def _run(self, claim: queue.Claim) -> WorkOutcome | None:
        """Run one task: its outcome joins :attr:`unsent` (None returned),
        or it is handed back at once (what happened returned)."""
        started = time.perf_counter()
        log.debug("task taken", extra={"task_id": claim.task_id, "attempt": claim.attempt})
        try:
            result = self._compute(claim)
        except (OperationFailed, UnknownOperation, TypeError, ValueError) as error:
            # Permanent: the same input gives the same error on every retry.
            self._keep(queue.Outcome(claim, error=str(error)), started)
            return None
        except TaskTimeout:
            limit = self.settings.task_timeout
            return self._hand_back(claim, "timeout", f"ran longer than {limit:g} s", backoff=True)
        except GraceOver:
            return self._hand_back(claim, "shutdown", "worker stopped before finishing")
        self._keep(queue.Outcome(claim, result=result), started)
        return None

    def _release(self, claims: list[queue.Claim]) -> None:
        try:
            released = self._with_reconnect(
                lambda: queue.release(self.scripts, self.worker_id, claims)
            )
        except valkey.ValkeyError as error:
            if faults.valkey_trouble(error) is None:
                raise
            # Their leases run out and the reaper hands them back.
            released = 0
        log.info("tasks never started given back", extra={"tasks": released})

    def _keep(self, outcome: queue.Outcome, started: float) -> None:
        duration_ms = (time.perf_counter() - started) * 1000
        self.unsent.append(_Ran(outcome, duration_ms))

    def _compute(self, claim: queue.Claim) -> queue.Number:
        """Run the operation under a time limit: ``task_timeout`` seconds of
        wall-clock time from now (or the end of the grace period, if sooner).

        The limit is cooperative: the work calls :meth:`_checkpoint` every few
        milliseconds, so :class:`TaskTimeout` / :class:`GraceOver` can only be
        raised inside the computation. A signal-based timer (SIGALRM) could
        go off anywhere, e.g. in the middle of recording the result after the
        process was frozen (SIGSTOP) past the limit, and crash the worker
        instead of letting the fenced write refuse the late result."""
        self._task_deadline = time.monotonic() + self.settings.task_timeout
        try:
            return compute(
                claim.operation,
                claim.a,
                claim.b,
                work_seconds=self.settings.work_seconds,
                checkpoint=self._checkpoint,
            )
        finally:
            self._task_deadline = None

    def _checkpoint(self) -> None:
        """Called by the computation every few ms: stop it if its time is up.

        Raises:
            GraceOver: SIGTERM came and the grace period has ended.
            TaskTimeout: the task ran past ``task_timeout``.
        """
        now = time.monotonic()
        if self._grace_deadline is not None and now >= self._grace_deadline:
            raise GraceOver()
        if self._task_deadline is not None and now >= self._task_deadline:
            raise TaskTimeout()

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
        """Write this worker's card (:func:`wizard.membership.beat`), renew
        the leases on the tasks it holds, and add its counts of the last
        second to Valkey (:class:`wizard.metrics.Tally`): one round trip,
        plus one per task held, plus one if anything was counted.

        The beat also reads Valkey's clock (TIME): the offset to this
        machine's clock, good to half a round trip, lets a step stamp its
        claims with Valkey's time without a TIME of its own.

        Raises:
            valkey.ConnectionError, valkey.TimeoutError: Valkey is unreachable.
        """
        claim = self.current
        card = membership.WorkerCard(
            self.worker_id,
            node=self.settings.node_id,
            pid=os.getpid(),
            started=self.started,
            at=time.time(),
            tasks_done=self.tasks_done,
            task_id=claim.task_id if claim else None,
        )
        sent = time.time()
        valkey_us = membership.beat(self.client, card, ttl_ms=self.lease_ms)
        midway = (sent + time.time()) / 2
        self.clock_offset_us = valkey_us - midway * 1_000_000
        for held in self.held:
            queue.renew(self.client, self.scripts, held, lease_ms=self.lease_ms)
        self.tally.flush(self.scripts, self.settings.node_id)

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
        self._record_the_rest()
        self._stopping.set()
        heartbeat.join(timeout=2)
        self._flush_counts()
        self._sign_off()
        log.info(f"worker stopping: {self._stop_story()}", extra={"pid": os.getpid()})

    def _stop_story(self) -> str:
        """Why the worker stops and, if it stopped while holding a task, what
        really became of that task (never "finished" when the write failed)."""
        if self.last_task is None or not self.stop_reason.endswith("while running a task"):
            return self.stop_reason
        task_id, outcome = self.last_task
        if outcome is None:
            return (
                f"{self.stop_reason}: task {task_id} was NOT recorded (Valkey unreachable); "
                "the reaper hands it back when its lease runs out"
            )
        return f"{self.stop_reason}: task {task_id} ended {outcome.value}"

    def _step(self) -> None:
        chaos, node_id = self.settings.chaos_operations, self.settings.node_id
        faults.inject(self.client, chaos, node_id, "worker")
        self.step()

    def _record_the_rest(self) -> None:
        """Send the outcomes still unsent when the loop ends (within one
        lease; after that the reaper hands those tasks back)."""
        if not self.unsent:
            return
        try:
            self._with_reconnect(lambda: self.step(take=False))
        except valkey.ValkeyError as error:
            if faults.valkey_trouble(error) is None:
                raise
            # Gave up after a lease: the reaper hands these tasks back.
            log.warning(
                "outcomes not recorded: Valkey unreachable", extra={"tasks": len(self.unsent)}
            )

    def _flush_counts(self) -> None:
        try:
            self.tally.flush(self.scripts, self.settings.node_id)
        except valkey.ValkeyError as error:
            if faults.valkey_trouble(error) is None:
                raise
            # The last second of counts is lost; the task records are safe.
            log.warning("last counts not added to the metrics: Valkey unreachable")

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
        what = "while running a task" if self.current is not None else "while idle"
        self.stop(f"SIGTERM {what}")
        # Read by _checkpoint: an unfinished computation stops at this time.
        self._grace_deadline = time.monotonic() + self.settings.grace_seconds


@dataclass(frozen=True)
class _Ran:
    """A task run, its outcome not yet recorded: the outcome and how long
    the worker spent on it, milliseconds."""

    outcome: queue.Outcome
    duration_ms: float

    @property
    def status(self) -> queue.TaskStatus:
        """``complete``, or ``failed`` when the outcome is an error."""
        failed = self.outcome.error is not None
        return queue.TaskStatus.FAILED if failed else queue.TaskStatus.COMPLETE


def run_worker(settings: Settings, worker_id: str) -> None:
    """Entry point of a worker process (a top-level function, so ``spawn``
    can start it by name). Builds its own Valkey connection in the child."""
    from . import logs, proctitle

    logs.configure(settings.log_level, node=settings.node_id, process=worker_id)
    faults.install_crash_hooks()
    proctitle.name(node_id=settings.node_id, role=f"worker {membership.worker_number(worker_id)}")
    Worker(settings, worker_id).run()
