"""Ceilings of the queue figures: bare valkey-py loops on the same Valkey.

A wizard worker takes a task with BLMOVE, claims it (Lua), runs it and
records the outcome (Lua). The least any consumer of this reliable queue
can do is the same three round trips without the scripts::

    BLMOVE source processing RIGHT LEFT      take an id, keep a copy
    HSET task status complete result ...     record the outcome
    LREM processing 1 id                     drop the copy

:func:`bare_drain` runs that loop in P spawned processes over a prefilled
list and returns the rate per process: the ceiling of a worker's drain
rate. :func:`bare_latency` times one producer (MULTI: HSET + LPUSH, with
``created_at`` stamped before it, as :func:`wizard.queue.submit` does) and
one such consumer (``finished_at`` stamped before its HSET, as
:func:`wizard.queue.finish` does): the floor of submit-to-complete latency.

The clients are built by :func:`wizard.store.connect`, exactly as the
workers' are. Keys live under ``bench:`` and are deleted afterwards.
"""

from __future__ import annotations

import multiprocessing
import queue
import statistics
import time
import uuid
from dataclasses import dataclass

from wizard import store
from wizard.config import Settings

#: BLMOVE timeout of the bare consumers, seconds: an empty source for this
#: long ends the loop (the time is not counted).
BLOCK_SECONDS = 0.2

#: The list the bare consumers drain.
SOURCE = "bench:bare:queue"
#: Prefix of the bare tasks' hashes.
TASK_PREFIX = "bench:bare:task:"
#: Prefix of the bare consumers' processing lists.
PROCESSING_PREFIX = "bench:bare:processing:"

#: Pause between two looks at a task's status while waiting for it to end,
#: seconds: short next to the latency measured, long enough that the waiting
#: client does not take CPU from the processes it waits for.
POLL_SECONDS = 0.001

#: Longest wait for spawned consumers to connect or finish, seconds (20,000
#: tasks on a busy 2-core machine can take over a minute).
JOIN_SECONDS = 240.0

_SPAWN = multiprocessing.get_context("spawn")


@dataclass(frozen=True)
class DrainResult:
    """``tasks`` done by ``processes`` consumers between the first take and
    the last record, ``seconds`` apart."""

    tasks: int
    processes: int
    seconds: float

    @property
    def rate(self) -> float:
        """Tasks per second, all processes together."""
        return self.tasks / self.seconds

    @property
    def rate_per_process(self) -> float:
        """Tasks per second per consumer process."""
        return self.rate / self.processes


def _client(valkey_url: str, block_seconds: float = 0.0):
    return store.connect(Settings(valkey_url=valkey_url), blocking_seconds=block_seconds)


def _consume(valkey_url: str, name: str, ready, go, results) -> None:
    """One bare consumer process: drain SOURCE, then put (tasks, first
    start, last finish) on ``results``. The times are Unix seconds stamped
    where the wizard stamps ``started_at`` (after the take) and
    ``finished_at`` (before the record), so both rates span the same steps."""
    client = _client(valkey_url, BLOCK_SECONDS)
    processing = PROCESSING_PREFIX + name
    client.ping()
    ready.release()
    go.wait(JOIN_SECONDS)
    done, first, last = 0, None, None
    while True:
        task_id = client.blmove(SOURCE, processing, BLOCK_SECONDS, "RIGHT", "LEFT")
        if task_id is None:
            break
        first = time.time() if first is None else first
        last = time.time()
        client.hset(
            TASK_PREFIX + task_id,
            mapping={"status": "complete", "result": "3", "finished_at": repr(last)},
        )
        client.lrem(processing, 1, task_id)
        done += 1
    results.put((done, first, last))


def _fill(client, count: int) -> None:
    """Put ``count`` fresh ids (32 hex digits, like task ids) in SOURCE."""
    ids = [uuid.uuid4().hex for _ in range(count)]
    with client.pipeline(transaction=False) as pipe:
        for start in range(0, count, 1000):
            pipe.lpush(SOURCE, *ids[start : start + 1000])
        pipe.execute()


def _clean(client) -> None:
    """Delete every ``bench:bare:`` key."""
    keys = list(client.scan_iter(match="bench:bare:*", count=1000))
    for start in range(0, len(keys), 1000):
        client.delete(*keys[start : start + 1000])


def bare_drain(valkey_url: str, *, tasks: int, processes: int) -> DrainResult:
    """Drain ``tasks`` prefilled ids with ``processes`` bare consumers
    started together (spawned, connected, then released at once).

    Raises:
        RuntimeError: a consumer did not connect or finish in JOIN_SECONDS.
    """
    client = _client(valkey_url)
    _clean(client)
    _fill(client, tasks)
    ready, go, results = _SPAWN.Semaphore(0), _SPAWN.Event(), _SPAWN.Queue()
    consumers = [
        _SPAWN.Process(target=_consume, args=(valkey_url, f"c{n}", ready, go, results))
        for n in range(processes)
    ]
    try:
        for consumer in consumers:
            consumer.start()
        for _ in consumers:
            _wait(lambda: ready.acquire(timeout=0.05), consumers, "connect to Valkey")
        go.set()
        reports = [_wait(lambda: _get(results), consumers, "drain") for _ in consumers]
    finally:
        _stop(consumers)
        _clean(client)
        client.close()
    done = sum(r[0] for r in reports)
    firsts = [r[1] for r in reports if r[1] is not None]
    lasts = [r[2] for r in reports if r[2] is not None]
    return DrainResult(done, processes, max(lasts) - min(firsts))


def _get(results) -> tuple | None:
    try:
        return results.get(timeout=0.05)
    except queue.Empty:
        # Nothing yet: the caller checks the consumers and asks again.
        return None


def _wait(step, consumers: list, what: str):
    """Call ``step()`` until it returns something truthy; return that.

    Raises:
        RuntimeError: a consumer failed (its traceback is on stderr), or
            JOIN_SECONDS passed.
    """
    deadline = time.monotonic() + JOIN_SECONDS
    while not (found := step()):
        if any(c.exitcode not in (None, 0) for c in consumers):
            raise RuntimeError(f"a bare consumer failed before it could {what}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the bare consumers did not {what} within {JOIN_SECONDS:g} s")
    return found


def _stop(consumers: list) -> None:
    """Wait for each consumer; terminate (SIGTERM to its PID) one that
    is still running after JOIN_SECONDS."""
    for consumer in consumers:
        if consumer.pid is None:
            continue
        consumer.join(JOIN_SECONDS)
        if consumer.is_alive():
            consumer.terminate()
            consumer.join()


@dataclass(frozen=True)
class Latencies:
    """Submit-to-complete times of sequential single tasks, milliseconds."""

    samples_ms: tuple[float, ...]

    def percentile(self, p: int) -> float:
        """The ``p``-th percentile (1..99), "exclusive" method of
        :func:`statistics.quantiles` (the one of Hyndman and Fan type 6)."""
        return statistics.quantiles(self.samples_ms, n=100, method="exclusive")[p - 1]


def _echo(valkey_url: str, ready) -> None:
    """The latency floor's consumer: record each task until it takes STOP."""
    client = _client(valkey_url, BLOCK_SECONDS)
    processing = PROCESSING_PREFIX + "latency"
    client.ping()
    ready.release()
    while True:
        task_id = client.blmove(SOURCE, processing, 5.0, "RIGHT", "LEFT")
        if task_id in (None, "STOP"):
            return
        client.hset(TASK_PREFIX + task_id, mapping={"finished_at": repr(time.time())})
        client.lrem(processing, 1, task_id)


def bare_latency(valkey_url: str, *, samples: int) -> Latencies:
    """Submit ``samples`` tasks one at a time to one bare consumer and time
    each from ``created_at`` to ``finished_at`` (both stamped as the wizard
    stamps them). Waits for each by polling HGET every POLL_SECONDS.

    Raises:
        RuntimeError: the consumer did not connect, or a task never finished.
    """
    client = _client(valkey_url)
    _clean(client)
    ready = _SPAWN.Semaphore(0)
    consumer = _SPAWN.Process(target=_echo, args=(valkey_url, ready))
    consumer.start()
    try:
        _wait(lambda: ready.acquire(timeout=0.05), [consumer], "connect to Valkey")
        found = [_one_bare_task(client) for _ in range(samples)]
        client.lpush(SOURCE, "STOP")
    finally:
        _stop([consumer])
        _clean(client)
        client.close()
    return Latencies(tuple(found))


def _one_bare_task(client) -> float:
    task_id = uuid.uuid4().hex
    key = TASK_PREFIX + task_id
    created_at = time.time()
    with client.pipeline(transaction=True) as tx:
        tx.hset(key, mapping={"status": "pending", "created_at": repr(created_at)})
        tx.lpush(SOURCE, task_id)
        tx.execute()
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        finished_at = client.hget(key, "finished_at")
        if finished_at is not None:
            return (float(finished_at) - created_at) * 1000
        time.sleep(POLL_SECONDS)
    raise RuntimeError("a bare task was not finished within 5 s")
