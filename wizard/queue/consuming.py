"""Consuming: a worker takes tasks, keeps their leases, and records outcomes.

One script, ``step.lua``, does a busy worker's whole round trip: record the
outcome of the task it ran, then take the next one. Taking moves an id from
``task_queue`` into the worker's own processing list in one step (the
reliable-queue pattern of the Valkey LMOVE documentation) and claims it:
status ``running``, ``attempts`` + 1 and a lease (owner + expiry in Valkey's
milliseconds) that its heartbeat renews (``renew.lua``). When the queue is
empty the worker blocks on BLMOVE, with the same script pipelined behind it.

Recording (``step.lua``) and handing back (``retry.lua``) are fenced by the
lease owner and the attempt number (a fencing token): a worker that was
paused past its lease and wakes up after another worker finished has its
write refused.

    worker                                   Valkey
      │── step(outcome of t1, take 1) ──────► record t1, move + claim t2
      │◄───────────────────────────── t2 ───│
      │   run t2
      │── step(outcome of t2, take 1) ──────► record t2, queue empty
      │◄───────────────────────────── () ───│
      │── BLMOVE ‖ step(first=head) ────────► blocks until t3 arrives
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

import valkey

from .. import store
from ..operations import Number
from .policy import RetryPolicy
from .scripts import Scripts
from .task import Claim, TaskStatus


class RetryOutcome(str, Enum):
    """What :func:`retry` did with a task (the reply of ``retry.lua``)."""

    #: Back in the queue (or the delayed set) for another attempt.
    RETRY = "retry"
    #: Attempts used up: moved to the dead-letter queue, status ``failed``.
    DEAD = "dead"
    #: Refused: the caller no longer holds the lease.
    FENCED = "fenced"
    #: The task expired; nothing to hand back.
    GONE = "gone"
    #: The reaper's only: the holder renewed its lease since the reaper looked.
    RENEWED = "renewed"


@dataclass(frozen=True)
class _StepArgs:
    """ARGV of ``step.lua``."""

    worker_id: str
    outcomes: str
    finished_at: str
    ttl_seconds: int
    take: int
    first: str
    lease_ms: int
    now_us: str
    task_prefix: str


@dataclass(frozen=True)
class _RenewArgs:
    """ARGV of ``renew.lua``."""

    worker_id: str
    attempt: int
    lease_ms: int


@dataclass(frozen=True)
class Outcome:
    """What became of a task a worker ran, to be recorded by :func:`step`:
    ``result`` when it completed, or ``error`` (a sentence) when it failed
    for good (a permanent error, not retried)."""

    claim: Claim
    result: Number | None = None
    error: str | None = None

    def as_argv(self) -> list:
        """``[task_id, attempt, status, field, value]`` as ``step.lua`` reads it."""
        claim = self.claim
        if self.error is None:
            status, field, value = TaskStatus.COMPLETE, "result", json.dumps(self.result)
        else:
            status, field, value = TaskStatus.FAILED, "error", self.error
        return [claim.task_id, str(claim.attempt), status.value, field, value]


@dataclass(frozen=True)
class Step:
    """The reply of one :func:`step`: per outcome sent, whether it was
    written (False: refused, the lease was lost); then the new claims."""

    written: tuple[bool, ...]
    claims: tuple[Claim, ...]


@dataclass(frozen=True)
class Taking:
    """How a worker takes tasks in :func:`step`: up to ``batch`` at a time
    (``WIZARD_BATCH``), each with a lease of ``lease_ms`` milliseconds,
    blocking up to ``block_seconds`` on an empty queue, by ``fetch``
    (``blmove``, the reliable queue, or ``brpop``, the original design).
    ``result_ttl`` (seconds) is how long a recorded task stays readable, and
    ``node_id`` the node whose counters a refused write is counted in."""

    node_id: str
    lease_ms: int
    block_seconds: float
    result_ttl: int
    batch: int = 1
    fetch: str = "blmove"


@dataclass(frozen=True)
class _ReleaseArgs:
    """ARGV of ``release.lua``."""

    worker_id: str
    claims: str
    task_prefix: str


@dataclass(frozen=True)
class HandBack:
    """A task to give back (see :func:`retry`).

    ``worker_id`` and ``attempt`` are the lease holder and fencing token: a
    worker passes its own claim's; the reaper passes those it saw on the lost
    worker's task, so a worker that finished meanwhile wins. ``reason`` is a
    short word (``worker_lost``, ``timeout``, ``shutdown``), ``error`` a
    sentence, ``delay_seconds`` the wait before the next attempt (0: to the
    front of the queue now). ``only_if_expired`` is the reaper's: hand back
    only if the lease has still run out when the script runs (by Valkey's
    clock), so a holder that renewed since the reaper looked keeps its task.
    ``count_attempt=False`` (the reaper's, for a lease that ran out while
    Valkey was unreachable) hands it back without using up one of the
    policy's attempts: a store outage is not the task's fault, so it never
    dead-letters a task. ``attempts`` still goes up (it is the fencing
    token); the hash's ``outage_attempts`` counts the ones forgiven.
    """

    task_id: str
    worker_id: str
    attempt: int
    reason: str
    error: str
    delay_seconds: float = 0.0
    only_if_expired: bool = False
    count_attempt: bool = True


@dataclass(frozen=True)
class _RetryArgs:
    """ARGV of ``retry.lua``."""

    worker_id: str
    attempt: int
    task_id: str
    reason: str
    error: str
    max_attempts: int
    due: str
    now: str
    dead_letter_ttl: int
    only_if_expired: int
    count_attempt: int


def step(
    client: valkey.Valkey,
    scripts: Scripts,
    worker_id: str,
    taking: Taking,
    *,
    outcomes: Sequence[Outcome] = (),
    take: bool = True,
    now_us: int | None = None,
) -> Step:
    """Record ``outcomes`` and take the next tasks, in one round trip while
    the queue has tasks (``step.lua``: record, then claim up to
    ``taking.batch``). Without prefetching: nothing is taken while a task
    runs, only once its outcome is sent.

    With nothing to record, the worker blocks instead: BLMOVE, then
    ``step.lua`` claiming the id BLMOVE moved (and up to ``batch - 1``
    more), in one pipeline. Valkey runs the claim on this connection right
    after BLMOVE returns, with no gap. So when a step that recorded finds
    the queue empty it returns no claims, the worker logs what it recorded,
    and its next step blocks.

    ``take=False`` only records (a stopping worker). ``now_us`` is Valkey's
    clock as the worker tracks it (microseconds; see
    :meth:`wizard.worker.Worker.beat`): the lease and ``started_at`` of a
    non-blocking claim are stamped with it, which saves a TIME per task;
    None makes the script read TIME.

    If the reply is lost (Valkey unreachable), the caller may send the same
    outcomes again: a repeat of a recorded outcome answers "written". Tasks
    claimed by a step whose reply was lost stay in the worker's processing
    list under a lease nobody renews; the reaper hands them back when it
    expires (a pending one, moved but never claimed, a lease after it sees
    it).

    Raises:
        valkey.ConnectionError, valkey.TimeoutError: Valkey is unreachable.
    """
    outcomes = list(outcomes)
    if not outcomes and take:
        return Step((), _block_and_claim(client, scripts, worker_id, taking))
    clock = "" if now_us is None else str(now_us)
    # The BRPOP consumer never moves ids into a list (that is its flaw, kept
    # for the lesson): it records here and takes with BRPOP next time.
    take = take and taking.fetch != "brpop"
    reply = _run_step(scripts, worker_id, taking, outcomes, take, "", clock)
    return Step(tuple(flag == 1 for flag in reply[0]), _claims(worker_id, reply[1]))


def _run_step(scripts, worker_id, taking, outcomes, take, first, now_us) -> list:
    return scripts.step(
        keys=_step_keys(worker_id, taking),
        args=_step_args(worker_id, taking, outcomes, take, first, now_us),
    )


def _step_keys(worker_id: str, taking: Taking) -> list[str]:
    return [store.processing_key(worker_id), store.TASK_QUEUE, store.stats_key(taking.node_id)]


def _step_args(worker_id, taking, outcomes, take, first, now_us) -> _StepArgs:
    return _StepArgs(
        worker_id=worker_id,
        outcomes=json.dumps([o.as_argv() for o in outcomes]),
        finished_at=repr(time.time()),
        ttl_seconds=taking.result_ttl,
        take=taking.batch if take else 0,
        first=first,
        lease_ms=taking.lease_ms,
        now_us=now_us,
        task_prefix=store.TASK_PREFIX,
    )


def _claims(worker_id: str, flat: list) -> tuple[Claim, ...]:
    """The claims in ``step.lua``'s flat reply: id, attempt, operation, a, b
    for each."""
    claims = []
    for start in range(0, len(flat), 5):
        task_id, attempt, operation, a, b = flat[start : start + 5]
        claims.append(
            Claim(task_id, worker_id, int(attempt), operation, json.loads(a), json.loads(b))
        )
    return tuple(claims)


def _block_and_claim(
    client: valkey.Valkey, scripts: Scripts, worker_id: str, taking: Taking
) -> tuple[Claim, ...]:
    """Block up to ``block_seconds`` for one id, then claim it (and up to
    ``batch - 1`` more that are waiting)."""
    if taking.fetch == "brpop":
        popped = client.brpop([store.TASK_QUEUE], timeout=taking.block_seconds)
        if popped is None:
            return ()
        # Only the id it popped: a batch would move ids into a list.
        one = dataclasses.replace(taking, batch=1)
        reply = _run_step(scripts, worker_id, one, [], True, popped[1], "")
        return _claims(worker_id, reply[1])
    processing = store.processing_key(worker_id)
    args = _step_args(worker_id, taking, [], True, "head", "")
    keys = _step_keys(worker_id, taking)
    with client.pipeline(transaction=False) as pipe:
        pipe.blmove(store.TASK_QUEUE, processing, taking.block_seconds, "RIGHT", "LEFT")
        scripts.step.queue(pipe, keys=keys, args=args)
        moved, reply = pipe.execute(raise_on_error=False)
    if isinstance(moved, Exception):
        raise moved
    # Even when BLMOVE timed out the claim ran: an id a previous process of
    # this worker moved but never claimed is at the head, and is taken now.
    if isinstance(reply, valkey.exceptions.NoScriptError):
        # Valkey restarted and forgot the script; the id is already in
        # our list, so claim it now (this loads the script again).
        reply = scripts.step(keys=keys, args=args)
    elif isinstance(reply, Exception):
        raise reply
    return _claims(worker_id, reply[1])


def take(
    client: valkey.Valkey,
    scripts: Scripts,
    worker_id: str,
    *,
    lease_ms: int,
    block_seconds: float,
    fetch: str = "blmove",
) -> Claim | None:
    """Block up to ``block_seconds`` for one task and claim it (the first
    half of :func:`step`, for callers that take one task at a time).

    ``fetch="blmove"`` (default) moves the id into the worker's processing
    list in the same step as the pop, so a crash right after leaves a trace
    the reaper can find. ``fetch="brpop"`` is the original design: the id
    exists only in this process's memory until the result is written, and a
    crash in between loses the task (kept to teach exactly that).

    Returns None when nothing arrived in time, or the id taken was not
    pending any more (expired, or already finished by another worker).

    Raises:
        valkey.ConnectionError, valkey.TimeoutError: Valkey is unreachable.
    """
    # Nothing is recorded, so no node's counter is touched: node_id unused.
    taking = Taking("", lease_ms, block_seconds, result_ttl=1, fetch=fetch)
    claims = _block_and_claim(client, scripts, worker_id, taking)
    return claims[0] if claims else None


def renew(client: valkey.Valkey, scripts: Scripts, claim: Claim, *, lease_ms: int) -> bool:
    """Extend the lease on ``claim`` by ``lease_ms``. False if it was lost."""
    renewed = scripts.renew(
        keys=[store.task_key(claim.task_id)],
        args=_RenewArgs(claim.worker_id, claim.attempt, lease_ms),
    )
    return renewed == 1


def finish(
    client: valkey.Valkey,
    scripts: Scripts,
    claim: Claim,
    *,
    node_id: str,
    result_ttl: int,
    result: Number | None = None,
    error: str | None = None,
) -> bool:
    """Record the outcome of ``claim``: ``complete`` with ``result``, or,
    when ``error`` is given, ``failed`` (a permanent error, not retried).
    The second half of :func:`step`, alone. Task counters and durations are
    not written here: workers keep them in memory
    (:class:`wizard.metrics.Tally`) and flush them once a second.

    Returns False if the write was refused because the worker no longer
    holds the lease (the refusal is counted in ``stats`` as fenced_writes).
    Idempotent: repeating a write whose reply was lost returns True again.

    Raises:
        valkey.ConnectionError, valkey.TimeoutError: Valkey is unreachable;
            calling again is safe (the script is idempotent under fencing).
    """
    taking = Taking(node_id, lease_ms=0, block_seconds=0, result_ttl=result_ttl)
    outcome = Outcome(claim, result=result, error=error)
    done = step(client, scripts, claim.worker_id, taking, outcomes=[outcome], take=False)
    return done.written[0]


def release(scripts: Scripts, worker_id: str, claims: list[Claim]) -> int:
    """Give back ``claims`` that ``worker_id`` took but never started (the
    rest of a batch when it stops), as if never taken: status ``pending``,
    the attempt given back, at the front of the queue (``release.lua``, one
    command for all). A claim whose lease was lost is left alone. Returns
    how many went back.

    Raises:
        valkey.ConnectionError, valkey.TimeoutError: Valkey is unreachable;
            the leases run out and the reaper hands the tasks back.
    """
    if not claims:
        return 0
    args = _ReleaseArgs(
        worker_id=worker_id,
        claims=json.dumps([[c.task_id, str(c.attempt)] for c in claims]),
        task_prefix=store.TASK_PREFIX,
    )
    return scripts.release(keys=[store.processing_key(worker_id), store.TASK_QUEUE], args=args)


def retry(
    scripts: Scripts, hand_back: HandBack, policy: RetryPolicy, *, node_id: str
) -> RetryOutcome:
    """Give a task back for another attempt after ``hand_back.delay_seconds``
    (0: to the front of the queue now), or dead-letter it when the policy's
    ``max_attempts`` are used up (status ``failed``, ``reason`` kept, kept
    for ``dead_letter_ttl_seconds``). Attempts forgiven as store outages
    (``count_attempt=False``, now or earlier) are not counted. ``node_id``
    is the node whose counters record the outcome.

    Raises:
        valkey.ConnectionError, valkey.TimeoutError: Valkey is unreachable.
    """
    now = time.time()
    delay = hand_back.delay_seconds
    due = now + delay if delay > 0 else 0
    reply = scripts.retry(
        keys=[
            store.task_key(hand_back.task_id),
            store.processing_key(hand_back.worker_id),
            store.TASK_QUEUE,
            store.DELAYED_QUEUE,
            store.DEAD_LETTER_QUEUE,
            store.stats_key(node_id),
        ],
        args=_RetryArgs(
            worker_id=hand_back.worker_id,
            attempt=hand_back.attempt,
            task_id=hand_back.task_id,
            reason=hand_back.reason,
            error=hand_back.error,
            max_attempts=policy.max_attempts,
            due=repr(due),
            now=repr(now),
            dead_letter_ttl=policy.dead_letter_ttl_seconds,
            only_if_expired=int(hand_back.only_if_expired),
            count_attempt=int(hand_back.count_attempt),
        ),
    )
    return RetryOutcome(reply)
