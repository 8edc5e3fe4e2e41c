"""Queue: the task record and every step of its life on Valkey.

Producers and consumers meet only here. A task moves through these states::

    pending ──take──► running ──finish──► complete | failed
       ▲                 │
       └──── retry ◄─────┘   (worker lost, timed out, Valkey hiccup; with backoff)

The producer writes the task hash and pushes its id in one MULTI/EXEC
(:func:`submit`). A consumer takes an id with BLMOVE, which pops it from
``task_queue`` and copies it into the worker's own processing list in one step
(the reliable-queue pattern of the Valkey LMOVE documentation), then claims
it: status ``running``, ``attempts`` + 1 and a lease (owner + expiry in server
milliseconds) that its heartbeat renews. Finishing is one Lua script, so the
result, the status, the timestamps and the removal from the processing list
happen together or not at all, and only if the worker still holds the lease
with the same attempt number (a fencing token): a worker that was paused past
its lease and wakes up after another worker finished has its write refused.

    >>> task_id = submit(client, "add", 1, 2, accepted_by="node-1")   # doctest: +SKIP
    >>> claim = take(client, "node-1/w1", lease_ms=10_000, block_seconds=1)  # doctest: +SKIP
    >>> finish(client, claim, result=3)                               # doctest: +SKIP
    True

Timestamps are Unix seconds: ``created_at`` and ``finished_at`` from the
clock of the node that wrote them, ``started_at`` from Valkey's clock at the
claim. Lease expiry is compared with Valkey's own clock (``TIME``) inside the
scripts, so nodes with skewed clocks still agree on who holds a lease.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import time
import uuid
from dataclasses import dataclass
from enum import Enum

import valkey

from . import store
from .operations import Number

#: How long a dead letter stays readable, seconds (7 days).
DEAD_LETTER_TTL = 7 * 86400
#: Longest retry delay, seconds, however many attempts came before.
MAX_BACKOFF_SECONDS = 30.0
#: Upper bounds of the task-duration histogram, milliseconds (Prometheus
#: "le" buckets; "+Inf" is implied).
DURATION_BUCKETS_MS = (1, 5, 10, 50, 100, 500, 1000, 2500, 5000, 10000, 30000)


class TaskStatus(str, Enum):
    """Where a task is in its life. Stored as the ``status`` field."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETE = "complete"
    FAILED = "failed"


@dataclass(frozen=True)
class Task:
    """One task as stored in ``task:<id>``, decoded.

    ``a``, ``b`` and ``result`` keep their JSON kind (int or float).
    Times are Unix seconds (float) or None when the step has not happened.
    """

    task_id: str
    operation: str
    a: Number
    b: Number
    status: TaskStatus
    accepted_by: str
    handled_by: str | None
    attempts: int
    created_at: float
    started_at: float | None
    finished_at: float | None
    result: Number | None = None
    error: str | None = None
    reason: str | None = None

    @classmethod
    def from_hash(cls, task_id: str, fields: dict[str, str]) -> Task:
        """Decode the hash read with HGETALL (strings) into a Task."""

        def number(name: str) -> Number | None:
            raw = fields.get(name)
            return None if raw in (None, "") else json.loads(raw)

        def seconds(name: str) -> float | None:
            raw = fields.get(name)
            return None if raw in (None, "") else float(raw)

        return cls(
            task_id=task_id,
            operation=fields["operation"],
            a=number("a"),
            b=number("b"),
            status=TaskStatus(fields["status"]),
            accepted_by=fields.get("accepted_by", ""),
            handled_by=fields.get("handled_by") or None,
            attempts=int(fields.get("attempts", 0)),
            created_at=float(fields["created_at"]),
            started_at=seconds("started_at"),
            finished_at=seconds("finished_at"),
            result=number("result"),
            error=fields.get("error") or None,
            reason=fields.get("reason") or None,
        )

    def to_json(self) -> dict:
        """The task as the API shows it (no lease internals)."""
        body = {
            "task_id": self.task_id,
            "status": self.status.value,
            "operation": self.operation,
            "a": self.a,
            "b": self.b,
            "accepted_by": self.accepted_by,
            "handled_by": self.handled_by,
            "attempts": self.attempts,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }
        if self.status is TaskStatus.COMPLETE:
            body["result"] = self.result
        if self.error is not None:
            body["error"] = self.error
        if self.reason is not None:
            body["reason"] = self.reason
        if self.finished_at is not None:
            body["duration_ms"] = round((self.finished_at - self.created_at) * 1000, 3)
        return body


@dataclass(frozen=True)
class Claim:
    """A task a worker has taken and holds the lease on.

    ``attempt`` is the fencing token: the ``attempts`` value this claim set.
    """

    task_id: str
    worker_id: str
    attempt: int
    operation: str
    a: Number
    b: Number


def new_task_id() -> str:
    """A fresh task id: 32 lowercase hex digits (a random UUID4)."""
    return uuid.uuid4().hex


def is_task_id(text: str) -> bool:
    """True if ``text`` has the shape of a task id (32 hex digits)."""
    return len(text) == 32 and all(c in "0123456789abcdef" for c in text)


def backoff_seconds(attempts: int, base: float) -> float:
    """Delay before retry number ``attempts`` (1, 2, ...): exponential with
    "equal jitter" (half fixed, half random), capped at MAX_BACKOFF_SECONDS,
    as in the AWS Architecture Blog, "Exponential Backoff And Jitter" (2015)."""
    ceiling = min(MAX_BACKOFF_SECONDS, base * 2 ** max(attempts - 1, 0))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


# --- producer -------------------------------------------------------------


def submit(
    client: valkey.Valkey,
    operation: str,
    a: Number,
    b: Number,
    *,
    accepted_by: str,
    durable: bool = False,
) -> str:
    """Store a new task and enqueue its id, atomically (one MULTI/EXEC).

    With ``durable``, waits (WAITAOF, up to 1 s) until Valkey has written the
    transaction to its append-only file, so a 202 survives a crash of Valkey.

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
        _wait_for_aof(client, task_id)
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


#: How long an idempotency key remembers its task, seconds (24 hours).
IDEMPOTENCY_TTL = 86400


class KeyReused(ValueError):
    """Raised when an idempotency key comes back with a different operation
    or operands than the task it first created."""


def submit_once(
    client: valkey.Valkey,
    idempotency_key: str,
    operation: str,
    a: Number,
    b: Number,
    *,
    accepted_by: str,
    durable: bool = False,
) -> tuple[str, bool]:
    """Like :func:`submit`, but at most once per ``idempotency_key``: a client
    that got no answer (a timeout, a 503 after Valkey stalled) can send the
    same request again without creating a second task.

    Check-and-set with WATCH/MULTI/EXEC (optimistic locking): if another
    request with the same key commits between our read and our EXEC, the
    transaction is refused and we read again. The key expires after
    IDEMPOTENCY_TTL seconds. As in the IETF draft "The Idempotency-Key HTTP
    Header Field" (draft-ietf-httpapi-idempotency-key-header).

    Returns (task id, created): created is False when the key already named a
    task, whose id is returned.

    Raises:
        KeyReused: the key named a task with other input.
        valkey.ConnectionError, valkey.TimeoutError: Valkey is unreachable.
        NotDurable: ``durable`` and the write was not confirmed on disk.
    """
    key = store.idempotency_key(idempotency_key)
    task_id = new_task_id()
    with client.pipeline(transaction=True) as tx:
        while True:
            try:
                tx.watch(key)
                existing = tx.get(key)
                if existing is not None:
                    tx.unwatch()
                    _check_same_input(client, existing, operation, a, b)
                    return existing, False
                tx.multi()
                tx.set(key, task_id, ex=IDEMPOTENCY_TTL)
                _enqueue(tx, task_id, operation, a, b, accepted_by)
                tx.execute()
                break
            except valkey.WatchError:
                # Another request with this key committed first: read again.
                continue
    if durable:
        _wait_for_aof(client, task_id)
    return task_id, True


def _check_same_input(client: valkey.Valkey, task_id: str, operation: str, a, b) -> None:
    stored = client.hmget(store.task_key(task_id), "operation", "a", "b")
    if stored[0] is None:
        return  # the task itself has expired; the key still names it
    if stored != [operation, json.dumps(a), json.dumps(b)]:
        raise KeyReused(
            f"this Idempotency-Key already created task {task_id} with other input; "
            "use a new key for a new task"
        )


class NotDurable(RuntimeError):
    """Raised when WIZARD_DURABLE_ACK is on and Valkey did not fsync the task
    to its append-only file in time (or has the AOF off): the task is queued
    and will probably run, but may not survive a crash of Valkey.
    ``task_id`` names it."""

    def __init__(self, message: str, task_id: str) -> None:
        super().__init__(message)
        self.task_id = task_id


def _wait_for_aof(client: valkey.Valkey, task_id: str) -> None:
    try:
        local, _replicas = client.execute_command("WAITAOF", 1, 0, 1000)
    except valkey.ResponseError as error:
        # WAITAOF refuses outright when appendonly is off.
        raise NotDurable(f"Valkey cannot confirm durability ({error})", task_id) from None
    if local < 1:
        raise NotDurable("Valkey did not confirm the append-only file write within 1 s", task_id)


# --- readers (never write) ------------------------------------------------


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


# --- consumer -------------------------------------------------------------

# Claim the task this worker just moved to the head of its processing list
# (or, for the BRPOP consumer, which has no list, the id in ARGV[4]): status
# running, attempts + 1, a lease. Returns {id, attempt, operation, a, b}, or
# false if there is nothing pending to claim. An id whose task is gone or
# already ended is a stale duplicate and leaves the list; a running one is
# left for the reaper to judge. The task key is built from the id inside the
# script, which a single Valkey allows (Valkey Cluster would not).
# started_at is Valkey's clock at the claim (the worker may have sent this
# script long before, waiting on BLMOVE in the same pipeline).
# KEYS: processing list. ARGV: worker id, lease ms, task key prefix,
#       task id ('' = the head of the list).
_CLAIM = """
local id = ARGV[4]
if id == '' then
  id = redis.call('LINDEX', KEYS[1], 0)
  if not id then
    return false
  end
end
local key = ARGV[3] .. id
local f = redis.call('HMGET', key, 'status', 'operation', 'a', 'b')
if f[1] ~= 'pending' then
  if f[1] ~= 'running' then
    redis.call('LREM', KEYS[1], 1, id)
  end
  return false
end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local attempt = redis.call('HINCRBY', key, 'attempts', 1)
redis.call('HSET', key, 'status', 'running', 'handled_by', ARGV[1],
  'lease_owner', ARGV[1], 'lease_expires', now_ms + tonumber(ARGV[2]),
  'started_at', t[1] .. '.' .. string.format('%06d', tonumber(t[2])))
return {id, attempt, f[2], f[3], f[4]}
"""

# Extend a lease, only for its current holder and attempt.
# KEYS: task hash. ARGV: worker id, attempt, lease ms. Returns 1 or 0.
_RENEW = """
local f = redis.call('HMGET', KEYS[1], 'status', 'lease_owner', 'attempts')
if f[1] ~= 'running' or f[2] ~= ARGV[1] or f[3] ~= ARGV[2] then
  return 0
end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], 'lease_expires', now_ms + tonumber(ARGV[3]))
return 1
"""

# Record an outcome, fenced by lease owner + attempt. One atomic step: the
# outcome, status, finish time, expiry, removal from the processing list,
# counters and the duration histogram.
# KEYS: task hash, processing list, stats hash, duration hash.
# ARGV: worker, attempt, status, field ('result'|'error'), value, finished_at,
#       ttl seconds, task id, histogram bucket ("le" bound), duration ms.
_FINISH = """
redis.call('LREM', KEYS[2], 1, ARGV[8])
local f = redis.call('HMGET', KEYS[1], 'status', 'lease_owner', 'attempts', 'operation',
  'handled_by')
if f[1] == ARGV[3] and f[5] == ARGV[1] and f[3] == ARGV[2] then
  -- Our own write, repeated because its reply was lost: already done.
  return 1
end
if f[1] ~= 'running' or f[2] ~= ARGV[1] or f[3] ~= ARGV[2] then
  redis.call('HINCRBY', KEYS[3], 'fenced_writes', 1)
  return 0
end
-- An earlier attempt's error and reason do not describe this outcome.
redis.call('HDEL', KEYS[1], 'lease_expires', 'error', 'reason')
redis.call('HSET', KEYS[1], 'status', ARGV[3], ARGV[4], ARGV[5],
  'finished_at', ARGV[6], 'lease_owner', '')
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[7]))
redis.call('HINCRBY', KEYS[3], ARGV[3] .. ':' .. f[4], 1)
redis.call('HINCRBY', KEYS[4], f[4] .. '|' .. ARGV[9], 1)
redis.call('HINCRBYFLOAT', KEYS[4], f[4] .. '|sum', ARGV[10])
return 1
"""

# Hand a task back for another attempt, fenced like _FINISH. If the attempts
# are used up, dead-letter it instead. Used by a worker (timeout, grace period
# over) and by the reaper for a lost worker (with the owner and attempt it saw).
# KEYS: task hash, processing list, queue, delayed zset, dead-letter list, stats.
# ARGV: worker, attempt, task id, reason, error text,
#       max attempts, due time (s, 0 = front of the queue now), now (s),
#       dead-letter ttl, result ttl.
_RETRY = """
local f = redis.call('HMGET', KEYS[1], 'status', 'lease_owner', 'attempts', 'operation')
redis.call('LREM', KEYS[2], 1, ARGV[3])
if not f[1] then
  return 'gone'
end
if f[1] ~= 'running' or f[2] ~= ARGV[1] or f[3] ~= ARGV[2] then
  redis.call('HINCRBY', KEYS[6], 'fenced_writes', 1)
  return 'fenced'
end
local attempts = tonumber(f[3] or '0')
if attempts >= tonumber(ARGV[6]) then
  redis.call('HSET', KEYS[1], 'status', 'failed', 'reason', ARGV[4],
    'error', ARGV[5], 'finished_at', ARGV[8], 'lease_owner', '')
  redis.call('HDEL', KEYS[1], 'lease_expires')
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[9]))
  redis.call('LPUSH', KEYS[5], ARGV[3])
  redis.call('HINCRBY', KEYS[6], 'failed:' .. f[4], 1)
  redis.call('HINCRBY', KEYS[6], 'dead_lettered', 1)
  return 'dead'
end
redis.call('HSET', KEYS[1], 'status', 'pending', 'reason', ARGV[4],
  'error', ARGV[5], 'lease_owner', '')
redis.call('HDEL', KEYS[1], 'lease_expires')
redis.call('HINCRBY', KEYS[6], 'retried', 1)
if tonumber(ARGV[7]) > 0 then
  redis.call('ZADD', KEYS[4], ARGV[7], ARGV[3])
else
  redis.call('RPUSH', KEYS[3], ARGV[3])
end
return 'retry'
"""


class Scripts:
    """Every Lua script of the queue, bound to one client. Each runs with
    EVALSHA and is loaded again when Valkey answers NOSCRIPT (after a
    restart): see :class:`Script`."""

    def __init__(self, client: valkey.Valkey) -> None:
        self.claim = Script(client, _CLAIM)
        self.renew = Script(client, _RENEW)
        self.finish = Script(client, _FINISH)
        self.retry = Script(client, _RETRY)
        self.promote = Script(client, _PROMOTE)
        self.redrive = Script(client, _REDRIVE)
        self.discard = Script(client, _DISCARD)
        self.unclaim = Script(client, _UNCLAIM)


class Script:
    """One Lua script run with EVALSHA, loaded again on NOSCRIPT (after a
    Valkey restart). Like valkey-py's own Script, minus its per-call
    isinstance check against a typing Protocol, which costs more than the
    rest of the call."""

    def __init__(self, client: valkey.Valkey, source: str) -> None:
        self.client = client
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    def queue(self, pipe: valkey.client.Pipeline, keys: list, args: list) -> None:
        """Add a run of this script to ``pipe`` (EVALSHA; a missing script
        comes back as a NoScriptError in the pipeline's results)."""
        pipe.evalsha(self.sha, len(keys), *keys, *args)

    def __call__(self, keys: list, args: list):
        try:
            return self.client.evalsha(self.sha, len(keys), *keys, *args)
        except valkey.exceptions.NoScriptError:
            # Valkey restarted (or flushed its scripts): load it and go on.
            self.client.script_load(self.source)
            return self.client.evalsha(self.sha, len(keys), *keys, *args)


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
    claim_args = [worker_id, lease_ms, store.TASK_PREFIX]
    if fetch == "brpop":
        popped = client.brpop([store.TASK_QUEUE], timeout=block_seconds)
        if popped is None:
            return None
        claimed = scripts.claim(keys=[processing], args=[*claim_args, popped[1]])
    else:
        with client.pipeline(transaction=False) as pipe:
            pipe.blmove(store.TASK_QUEUE, processing, block_seconds, "RIGHT", "LEFT")
            scripts.claim.queue(pipe, keys=[processing], args=[*claim_args, ""])
            moved, claimed = pipe.execute(raise_on_error=False)
        if isinstance(moved, Exception):
            raise moved
        if isinstance(claimed, valkey.exceptions.NoScriptError):
            # Valkey restarted and forgot the script; the id is already in
            # our list, so claim it now (this loads the script again).
            claimed = scripts.claim(keys=[processing], args=[*claim_args, ""])
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
        args=[claim.worker_id, claim.attempt, lease_ms],
    )
    return renewed == 1


def _bucket(duration_ms: float) -> str:
    for upper in DURATION_BUCKETS_MS:
        if duration_ms <= upper:
            return str(upper)
    return "+Inf"


def finish(
    client: valkey.Valkey,
    scripts: Scripts,
    claim: Claim,
    *,
    node_id: str,
    result_ttl: int,
    duration_ms: float,
    result: Number | None = None,
    error: str | None = None,
) -> bool:
    """Record the outcome of ``claim``: ``complete`` with ``result``, or,
    when ``error`` is given, ``failed`` (a permanent error, not retried).

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
        args=[
            claim.worker_id,
            claim.attempt,
            outcome,
            field,
            value,
            repr(time.time()),
            result_ttl,
            claim.task_id,
            _bucket(duration_ms),
            round(duration_ms, 3),
        ],
    )
    return written == 1


def retry(
    client: valkey.Valkey,
    scripts: Scripts,
    task_id: str,
    *,
    node_id: str,
    worker_id: str,
    attempt: int,
    reason: str,
    error: str,
    max_attempts: int,
    delay_seconds: float,
    result_ttl: int,
) -> str:
    """Give a task back for another attempt after ``delay_seconds`` (0: to
    the front of the queue now), or dead-letter it when ``max_attempts`` are
    used up (status ``failed``, ``reason`` kept, kept for 7 days).
    ``node_id`` is the node whose counters record the outcome.

    ``worker_id`` and ``attempt`` are the lease holder and fencing token:
    a worker passes its own claim's; the reaper passes those it saw on the
    lost worker's task, so a worker that finished meanwhile wins.

    Returns one of "retry", "dead", "fenced" (caller lost the lease), "gone"
    (the task expired).

    Raises:
        valkey.ConnectionError, valkey.TimeoutError: Valkey is unreachable.
    """
    now = time.time()
    due = now + delay_seconds if delay_seconds > 0 else 0
    return scripts.retry(
        keys=[
            store.task_key(task_id),
            store.processing_key(worker_id),
            store.TASK_QUEUE,
            store.DELAYED_QUEUE,
            store.DEAD_LETTER_QUEUE,
            store.stats_key(node_id),
        ],
        args=[
            worker_id,
            attempt,
            task_id,
            reason,
            error,
            max_attempts,
            repr(due),
            repr(now),
            DEAD_LETTER_TTL,
            result_ttl,
        ],
    )


# --- recovery: the scheduler's tools ---------------------------------------


@dataclass(frozen=True)
class Lost:
    """A task found in a processing list whose worker has lost it.

    ``owner`` and ``attempt`` are the lease holder and fencing token seen at
    the time, passed on to :func:`retry` so a late finish still wins.
    """

    task_id: str
    worker_id: str
    owner: str
    attempt: int
    status: TaskStatus
    worker_alive: bool = False


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
        pipe.exists(store.heartbeat_key(worker_id))
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
        expired = expires is not None and int(expires) < now_ms
        if state == TaskStatus.RUNNING.value and not expired:
            continue
        record = Lost(task_id, worker_id, owner or "", int(attempts or 0), TaskStatus(state))
        lost.append(dataclasses.replace(record, worker_alive=bool(alive)))
    return lost


# Move an id that was never claimed out of a processing list, atomically:
# a pending task goes back to the front of the queue, a vanished or ended one
# is only dropped, and one claimed meanwhile (running) is left where it is.
# KEYS: processing list, task hash, queue. ARGV: task id. Returns 1 if requeued.
_UNCLAIM = """
local status = redis.call('HGET', KEYS[2], 'status')
if status == 'running' then
  return 0
end
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then
  return 0
end
if status == 'pending' then
  redis.call('RPUSH', KEYS[3], ARGV[1])
  return 1
end
return 0
"""


def requeue_unclaimed(scripts: Scripts, task_id: str, worker_id: str) -> bool:
    """Move a never-claimed (or vanished) id out of ``worker_id``'s
    processing list; a pending task goes back to the front of the queue.
    Returns True if it was requeued."""
    keys = [store.processing_key(worker_id), store.task_key(task_id), store.TASK_QUEUE]
    return scripts.unclaim(keys=keys, args=[task_id]) == 1


def processing_workers(client: valkey.Valkey) -> list[str]:
    """Ids of the workers that have a processing list (SCAN, not KEYS)."""
    prefix = store.PROCESSING_PREFIX
    return [key[len(prefix) :] for key in client.scan_iter(match=prefix + "*", count=500)]


# Move due ids from the delayed set to the front of the queue, atomically.
# KEYS: delayed zset, queue. ARGV: now (s), limit. Returns how many moved.
_PROMOTE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('RPUSH', KEYS[2], id)
end
return #due
"""


def promote_due(scripts: Scripts, *, limit: int = 500) -> int:
    """Move up to ``limit`` retries whose backoff has elapsed back into the
    queue. Returns how many moved."""
    keys = [store.DELAYED_QUEUE, store.TASK_QUEUE]
    return scripts.promote(keys=keys, args=[repr(time.time()), limit])


# Take a task out of the dead-letter queue and enqueue it afresh.
# KEYS: dead-letter list, task hash, queue. ARGV: task id.
_REDRIVE = """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then
  return 0
end
if redis.call('EXISTS', KEYS[2]) == 0 then
  return 0
end
redis.call('HSET', KEYS[2], 'status', 'pending', 'attempts', 0)
redis.call('HDEL', KEYS[2], 'reason', 'error', 'finished_at', 'started_at', 'handled_by')
redis.call('PERSIST', KEYS[2])
redis.call('LPUSH', KEYS[3], ARGV[1])
return 1
"""


def redrive_dead_letter(scripts: Scripts, task_id: str) -> bool:
    """Put a dead-lettered task back in the queue with its attempts reset.
    Returns False if ``task_id`` is not in the dead-letter queue."""
    keys = [store.DEAD_LETTER_QUEUE, store.task_key(task_id), store.TASK_QUEUE]
    return scripts.redrive(keys=keys, args=[task_id]) == 1


# Remove a task from the dead-letter queue and delete its hash.
# KEYS: dead-letter list, task hash. ARGV: task id.
_DISCARD = """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then
  return 0
end
redis.call('DEL', KEYS[2])
return 1
"""


def delete_dead_letter(scripts: Scripts, task_id: str) -> bool:
    """Remove a task from the dead-letter queue and delete it, atomically.
    Returns False if ``task_id`` is not in the dead-letter queue."""
    keys = [store.DEAD_LETTER_QUEUE, store.task_key(task_id)]
    return scripts.discard(keys=keys, args=[task_id]) == 1
