"""Consuming: a worker takes a task, keeps its lease, and records the outcome.

A consumer takes an id with BLMOVE, which pops it from ``task_queue`` and
copies it into the worker's own processing list in one step (the
reliable-queue pattern of the Valkey LMOVE documentation), then claims it
(``claim.lua``): status ``running``, ``attempts`` + 1 and a lease (owner +
expiry in server milliseconds) that its heartbeat renews (``renew.lua``).

Finishing (``finish.lua``) and handing back (``retry.lua``) are fenced by the
lease owner and the attempt number (a fencing token): a worker that was
paused past its lease and wakes up after another worker finished has its
write refused.
"""

from __future__ import annotations

import json
import time
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
class _ClaimArgs:
    """ARGV of ``claim.lua``."""

    worker_id: str
    lease_ms: int
    task_prefix: str
    task_id: str


@dataclass(frozen=True)
class _RenewArgs:
    """ARGV of ``renew.lua``."""

    worker_id: str
    attempt: int
    lease_ms: int


@dataclass(frozen=True)
class _FinishArgs:
    """ARGV of ``finish.lua``."""

    worker_id: str
    attempt: int
    status: str
    field: str
    value: str
    finished_at: str
    ttl_seconds: int
    task_id: str
    bucket: str
    duration_ms: float


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
    """

    task_id: str
    worker_id: str
    attempt: int
    reason: str
    error: str
    delay_seconds: float = 0.0
    only_if_expired: bool = False


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


def take(
    client: valkey.Valkey,
    scripts: Scripts,
    worker_id: str,
    *,
    lease_ms: int,
    block_seconds: float,
    fetch: str = "blmove",
) -> Claim | None:
    """Block up to ``block_seconds`` for a task and claim it.

    ``fetch="blmove"`` (default) moves the id into the worker's processing
    list in the same step as the pop, so a crash right after leaves a trace
    the reaper can find. ``fetch="brpop"`` is the original design: the id
    exists only in this process's memory until the result is written, and a
    crash in between loses the task (kept to teach exactly that).

    BLMOVE and the claim travel together in one pipeline: Valkey runs the
    claim on this connection right after BLMOVE returns, so taking a task
    costs one round trip, and the claim follows the move with no gap.

    Returns None when nothing arrived in time, or the id taken was not
    pending any more (expired, or already finished by another worker).

    Raises:
        valkey.ConnectionError, valkey.TimeoutError: Valkey is unreachable.
    """
    processing = store.processing_key(worker_id)
    if fetch == "brpop":
        popped = client.brpop([store.TASK_QUEUE], timeout=block_seconds)
        if popped is None:
            return None
        args = _ClaimArgs(worker_id, lease_ms, store.TASK_PREFIX, popped[1])
        claimed = scripts.claim(keys=[processing], args=args)
    else:
        args = _ClaimArgs(worker_id, lease_ms, store.TASK_PREFIX, "")
        with client.pipeline(transaction=False) as pipe:
            pipe.blmove(store.TASK_QUEUE, processing, block_seconds, "RIGHT", "LEFT")
            scripts.claim.queue(pipe, keys=[processing], args=args)
            moved, claimed = pipe.execute(raise_on_error=False)
        if isinstance(moved, Exception):
            raise moved
        if isinstance(claimed, valkey.exceptions.NoScriptError):
            # Valkey restarted and forgot the script; the id is already in
            # our list, so claim it now (this loads the script again).
            claimed = scripts.claim(keys=[processing], args=args)
        elif isinstance(claimed, Exception):
            raise claimed
    if claimed is None:
        return None
    task_id, attempt, operation, a, b = claimed
    return Claim(task_id, worker_id, int(attempt), operation, json.loads(a), json.loads(b))


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
    duration_ms: float,
    bucket: str,
    result: Number | None = None,
    error: str | None = None,
) -> bool:
    """Record the outcome of ``claim``: ``complete`` with ``result``, or,
    when ``error`` is given, ``failed`` (a permanent error, not retried).

    ``duration_ms`` (milliseconds) is added to the node's duration histogram
    in ``bucket``, the "le" bound the metrics chose for it
    (:func:`wizard.metrics.duration_bucket`).

    Returns False if the write was refused because the worker no longer
    holds the lease (the refusal is counted in ``stats`` as fenced_writes).
    Idempotent: repeating a write whose reply was lost returns True again.

    Raises:
        valkey.ConnectionError, valkey.TimeoutError: Valkey is unreachable;
            calling again is safe (the script is idempotent under fencing).
    """
    if error is None:
        outcome, field, value = TaskStatus.COMPLETE.value, "result", json.dumps(result)
    else:
        outcome, field, value = TaskStatus.FAILED.value, "error", error
    written = scripts.finish(
        keys=[
            store.task_key(claim.task_id),
            store.processing_key(claim.worker_id),
            store.stats_key(node_id),
            store.duration_key(node_id),
        ],
        args=_FinishArgs(
            worker_id=claim.worker_id,
            attempt=claim.attempt,
            status=outcome,
            field=field,
            value=value,
            finished_at=repr(time.time()),
            ttl_seconds=result_ttl,
            task_id=claim.task_id,
            bucket=bucket,
            duration_ms=round(duration_ms, 3),
        ),
    )
    return written == 1


def retry(
    scripts: Scripts, hand_back: HandBack, policy: RetryPolicy, *, node_id: str
) -> RetryOutcome:
    """Give a task back for another attempt after ``hand_back.delay_seconds``
    (0: to the front of the queue now), or dead-letter it when the policy's
    ``max_attempts`` are used up (status ``failed``, ``reason`` kept, kept
    for ``dead_letter_ttl_seconds``). ``node_id`` is the node whose counters
    record the outcome.

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
        ),
    )
    return RetryOutcome(reply)
