"""Producing: store a new task and enqueue its id.

The producer writes the task hash and pushes its id in one MULTI/EXEC
(:func:`submit`), so a task is never queued half-written. With an
idempotency key (:func:`submit_once`), a repeated request names the task the
first one created instead of creating a second.
"""

from __future__ import annotations

import json
import time

import valkey

from .. import store
from ..config import DurableAck
from ..operations import Number
from .task import TaskStatus, new_task_id

#: Longest an idempotency key remembers its task, seconds (24 hours); never
#: longer than the task itself lives (see :func:`submit_once`).
IDEMPOTENCY_TTL = 86400


class KeyReused(ValueError):
    """Raised when an idempotency key comes back with a different operation
    or operands than the task it first created."""


class NotDurable(RuntimeError):
    """Raised when WIZARD_DURABLE_ACK is on and Valkey did not fsync the task
    to its append-only file in time (or has the AOF off): the task is queued
    and will probably run, but may not survive a crash of Valkey.
    ``task_id`` names it."""

    def __init__(self, message: str, task_id: str) -> None:
        super().__init__(message)
        self.task_id = task_id


def submit(
    client: valkey.Valkey,
    operation: str,
    a: Number,
    b: Number,
    *,
    accepted_by: str,
    durable: DurableAck | bool = DurableAck.OFF,
) -> str:
    """Store a new task and enqueue its id, atomically (one MULTI/EXEC).

    With ``durable`` (a DurableAck; True means AOF), waits up to 1 s until
    the primary has written the transaction to its append-only file
    (WAITAOF), so a 202 survives a crash of Valkey, and with
    ``DurableAck.REPLICA`` also until a replica has it (WAIT), so it survives
    a failover. The client's socket timeout must then exceed
    2 * ACK_TIMEOUT_MS (``store.connect(..., blocking_seconds=2)``).

    Returns the task id.

    Raises:
        valkey.ConnectionError, valkey.TimeoutError: Valkey is unreachable.
        valkey.ResponseError: Valkey refused (out of memory, AOF off).
        NotDurable: ``durable`` and the write was not confirmed on disk.
    """
    task_id = new_task_id()
    with client.pipeline(transaction=True) as tx:
        _enqueue(tx, task_id, operation, a, b, accepted_by)
        tx.execute()
    if durable:
        _wait_for_ack(client, task_id, durable)
    return task_id


def _enqueue(tx, task_id: str, operation: str, a: Number, b: Number, accepted_by: str) -> None:
    """Queue the writes of a new task on the transaction ``tx``."""
    fields = {
        "operation": operation,
        "a": json.dumps(a),
        "b": json.dumps(b),
        "status": TaskStatus.PENDING.value,
        "accepted_by": accepted_by,
        "attempts": 0,
        "created_at": repr(time.time()),
    }
    tx.hset(store.task_key(task_id), mapping=fields)
    tx.lpush(store.TASK_QUEUE, task_id)
    tx.lpush(store.RECENT_TASKS, task_id)


def submit_once(
    client: valkey.Valkey,
    idempotency_key: str,
    operation: str,
    a: Number,
    b: Number,
    *,
    accepted_by: str,
    result_ttl: int = IDEMPOTENCY_TTL,
    durable: DurableAck | bool = DurableAck.OFF,
    client_id: str = "",
) -> tuple[str, bool]:
    """Like :func:`submit`, but at most once per ``idempotency_key`` of one
    ``client_id`` (keys are scoped per client): a client
    that got no answer (a timeout, a 503 after Valkey stalled) can send the
    same request again without creating a second task.

    Check-and-set with WATCH/MULTI/EXEC (optimistic locking): if another
    request with the same key commits between our read and our EXEC, the
    transaction is refused and we read again. As in the IETF draft "The
    Idempotency-Key HTTP Header Field"
    (draft-ietf-httpapi-idempotency-key-header).

    A key never outlives the task it names: it expires
    min(IDEMPOTENCY_TTL, ``result_ttl``) seconds after it was set, and the
    task lives until ``result_ttl`` seconds after it *ends*, which is later.
    A key whose task is gone all the same (deleted from the dead-letter
    queue) is a fresh key: it creates a new task.

    Returns (task id, created): created is False when the key already named a
    task, whose id is returned.

    Raises:
        KeyReused: the key named a task with other input.
        valkey.ConnectionError, valkey.TimeoutError: Valkey is unreachable.
        NotDurable: ``durable`` and the write was not confirmed on disk.
    """
    key = store.idempotency_key(client_id, idempotency_key)
    task_id = new_task_id()
    with client.pipeline(transaction=True) as tx:
        while True:
            try:
                tx.watch(key)
                existing = tx.get(key)
                if existing is not None and tx.exists(store.task_key(existing)):
                    tx.unwatch()
                    _check_same_input(client, existing, operation, a, b)
                    return existing, False
                tx.multi()
                tx.set(key, task_id, ex=min(IDEMPOTENCY_TTL, result_ttl))
                _enqueue(tx, task_id, operation, a, b, accepted_by)
                tx.execute()
                break
            except valkey.WatchError:
                # Another request with this key committed first: read again.
                continue
    if durable:
        _wait_for_ack(client, task_id, durable)
    return task_id, True


def _check_same_input(client: valkey.Valkey, task_id: str, operation: str, a, b) -> None:
    stored = client.hmget(store.task_key(task_id), "operation", "a", "b")
    if stored[0] is None:
        return  # the task expired a moment ago: nothing left to compare
    if stored != [operation, json.dumps(a), json.dumps(b)]:
        raise KeyReused(
            f"this Idempotency-Key already created task {task_id} with other input; "
            "use a new key for a new task"
        )


#: How long a durable ack waits for the disk and the replica, milliseconds.
ACK_TIMEOUT_MS = 1000


def _wait_for_ack(client: valkey.Valkey, task_id: str, durable: DurableAck | bool) -> None:
    """WAIT for one replica (REPLICA only), then WAITAOF for the primary's
    disk, pipelined in one round trip; each waits up to ACK_TIMEOUT_MS.
    WAIT runs first so that WAITAOF's fsync of ``everysec`` overlaps it."""
    replica = durable is DurableAck.REPLICA
    try:
        with client.pipeline(transaction=False) as pipe:
            if replica:
                pipe.execute_command("WAIT", 1, ACK_TIMEOUT_MS)
            pipe.execute_command("WAITAOF", 1, 0, ACK_TIMEOUT_MS)
            replies = pipe.execute()
    except valkey.ResponseError as error:
        # WAITAOF refuses outright when appendonly is off.
        raise NotDurable(f"Valkey cannot confirm durability ({error})", task_id) from None
    local, _replicas = replies[-1]
    if replica and replies[0] < 1:
        raise NotDurable(f"no replica confirmed the write within {ACK_TIMEOUT_MS} ms", task_id)
    if local < 1:
        raise NotDurable(
            f"Valkey did not confirm the append-only file write within {ACK_TIMEOUT_MS} ms",
            task_id,
        )
