"""Metrics: what ``GET /metrics`` says, in the Prometheus text format 0.0.4.

Two sources meet here:

- what the API process counts itself, in memory (:class:`ApiMetrics`: HTTP
  requests and tasks accepted; one API process per node, so these are per node);
- the task counters and duration histogram that this node's workers keep in
  Valkey (``stats:node:<node>``, ``stats:duration:<node>``), plus gauges
  read from the queue at scrape time (depth, oldest pending age, in flight,
  delayed, dead letters, live workers).

A worker does not write its counters with every task: that was four of the
sixteen Valkey commands a task cost. It counts in memory (:class:`Tally`)
and adds the counts to Valkey with one command a second, from its heartbeat
thread. So ``/metrics`` may be up to a second late, and a worker killed
with SIGKILL takes at most its last second of counts with it (the tasks
themselves are safe: their records are written with every task).

Every sample carries a ``node`` label naming the node that answered, so the
scrapes of several nodes (through the gateway or each on its own) never
mix: the counters are this node's, the queue gauges the shared queue's as
this node saw it.

Names follow the Prometheus naming conventions (base units in the name,
``_total`` for counters, ``_seconds`` for durations)::

    wizard_http_requests_total{route="/task",method="POST",status="202"} 17
    wizard_queue_pending_tasks 3
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

import valkey

from . import membership, queue, store

#: Request methods counted by name; any other method is counted as "other",
#: so a client inventing methods cannot add series (RFC 9110 §9 plus PATCH).
KNOWN_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)

#: Upper bounds of the HTTP latency histogram, seconds.
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

#: Upper bounds of the task-duration histogram, milliseconds (Prometheus
#: "le" buckets; "+Inf" is implied). Workers add to it as they finish tasks
#: (:func:`duration_bucket` names the bucket of a duration).
DURATION_BUCKETS_MS = (1, 5, 10, 50, 100, 500, 1000, 2500, 5000, 10000, 30000)


def duration_bucket(duration_ms: float) -> str:
    """The "le" bound (milliseconds, as text) of the task-duration bucket
    that ``duration_ms`` falls in, or ``"+Inf"`` past the last one."""
    for upper in DURATION_BUCKETS_MS:
        if duration_ms <= upper:
            return str(upper)
    return "+Inf"


@dataclass(frozen=True)
class _FlushArgs:
    """ARGV of ``flush.lua``: JSON objects, field -> amount to add."""

    counts: str
    buckets: str
    sums: str
    token: str


class Tally:
    """A worker's task counts and durations since its last flush, in memory.

    The main thread adds (:meth:`task_ended`); the heartbeat thread moves
    the totals to Valkey once a second (:meth:`flush`, one command). Fields
    are those of ``stats:node:<node>`` (``complete:<op>``, ``failed:<op>``)
    and ``stats:duration:<node>`` (``<op>|<le>``, ``<op>|sum`` in ms).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._buckets: dict[str, int] = {}
        self._sums: dict[str, float] = {}
        #: This process's name for its flushes (KEYS[3] of flush.lua).
        self._source = uuid.uuid4().hex
        #: A batch sent whose reply never came: sent again, as it is, first.
        self._unacknowledged: _FlushArgs | None = None
        #: One flush at a time (the heartbeat's and a stopping worker's).
        self._flushing = threading.Lock()

    def task_ended(self, operation: str, status: str, duration_ms: float) -> None:
        """Count one task of ``operation`` that ended with ``status``
        (``complete`` or ``failed``) after ``duration_ms`` milliseconds."""
        count, bucket = f"{status}:{operation}", f"{operation}|{duration_bucket(duration_ms)}"
        total = f"{operation}|sum"
        with self._lock:
            self._counts[count] = self._counts.get(count, 0) + 1
            self._buckets[bucket] = self._buckets.get(bucket, 0) + 1
            self._sums[total] = self._sums.get(total, 0.0) + duration_ms

    def flush(self, scripts: queue.Scripts, node_id: str) -> bool:
        """Add what was counted since the last flush to ``node_id``'s
        counters in Valkey (``flush.lua``, one command) and start again
        from zero. Returns False if there was nothing to add.

        A batch whose reply was lost is sent again unchanged, with its
        token, before anything newer: Valkey applies each token once, so a
        count is never added twice nor dropped.

        Raises:
            valkey.ConnectionError, valkey.TimeoutError: Valkey is
                unreachable; the batch is kept for the next flush.
        """
        with self._flushing:
            return self._flush(scripts, node_id)

    def _flush(self, scripts: queue.Scripts, node_id: str) -> bool:
        sent = False
        if self._unacknowledged is not None:
            self._send(scripts, node_id, self._unacknowledged)
            sent = True
        with self._lock:
            counts, buckets, sums = self._counts, self._buckets, self._sums
            self._counts, self._buckets, self._sums = {}, {}, {}
        if not counts:
            return sent
        batch = _FlushArgs(
            counts=json.dumps(counts),
            buckets=json.dumps(buckets),
            sums=json.dumps({field: round(ms, 3) for field, ms in sums.items()}),
            token=uuid.uuid4().hex,
        )
        self._send(scripts, node_id, batch)
        return True

    def _send(self, scripts: queue.Scripts, node_id: str, batch: _FlushArgs) -> None:
        keys = [
            store.stats_key(node_id),
            store.duration_key(node_id),
            store.flushed_key(self._source),
        ]
        self._unacknowledged = batch
        scripts.flush(keys=keys, args=batch)
        # Applied (or applied before, its reply lost): done with it.
        self._unacknowledged = None


class ApiMetrics:
    """Thread-safe counters of one API process: requests by route, method and
    status, a latency histogram by route, and tasks accepted by operation.

    The route is the pattern (``/tasks/<task_id>/status``), never the raw
    path, so the number of series stays bounded.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str, int], int] = {}
        self.buckets: dict[str, list[int]] = {}
        self.sums: dict[str, float] = {}
        self.submitted: dict[str, int] = {}

    def task_submitted(self, operation: str) -> None:
        """Count one task this node accepted (answered 202)."""
        with self._lock:
            self.submitted[operation] = self.submitted.get(operation, 0) + 1

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one request to ``route`` (a route pattern, or "unmatched")
        that took ``seconds``; ``method`` outside KNOWN_METHODS counts as "other"."""
        method = method if method in KNOWN_METHODS else "other"
        with self._lock:
            key = (route, method, status)
            self.requests[key] = self.requests.get(key, 0) + 1
            counts = self.buckets.setdefault(route, [0] * (len(HTTP_BUCKETS) + 1))
            for index, upper in enumerate(HTTP_BUCKETS):
                if seconds <= upper:
                    counts[index] += 1
                    break
            else:
                counts[-1] += 1
            self.sums[route] = self.sums.get(route, 0.0) + seconds

    def lines(self) -> Iterable[str]:
        """The series as exposition lines."""
        with self._lock:
            requests = dict(self.requests)
            buckets = {route: list(counts) for route, counts in self.buckets.items()}
            sums = dict(self.sums)
            submitted = dict(self.submitted)
        yield "# HELP wizard_tasks_submitted_total Tasks accepted by this node (202)."
        yield "# TYPE wizard_tasks_submitted_total counter"
        for operation, count in sorted(submitted.items()):
            yield f'wizard_tasks_submitted_total{{operation="{_escape(operation)}"}} {count}'
        yield "# HELP wizard_http_requests_total HTTP requests served by this node's API."
        yield "# TYPE wizard_http_requests_total counter"
        for (route, method, status), count in sorted(requests.items()):
            yield (
                f'wizard_http_requests_total{{route="{_escape(route)}",method="{method}",'
                f'status="{status}"}} {count}'
            )
        yield "# HELP wizard_http_request_duration_seconds Time to answer a request."
        yield "# TYPE wizard_http_request_duration_seconds histogram"
        for route, counts in sorted(buckets.items()):
            label = f'route="{_escape(route)}"'
            yield from _histogram(
                "wizard_http_request_duration_seconds",
                label,
                list(zip(map(str, HTTP_BUCKETS), counts[:-1], strict=True)),
                counts[-1],
                sums[route],
            )


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _histogram(name, label, finite_buckets, overflow, total) -> Iterable[str]:
    cumulative = 0
    for upper, count in finite_buckets:
        cumulative += count
        yield f'{name}_bucket{{{label},le="{upper}"}} {cumulative}'
    cumulative += overflow
    yield f'{name}_bucket{{{label},le="+Inf"}} {cumulative}'
    yield f"{name}_sum{{{label}}} {total:.6f}"
    yield f"{name}_count{{{label}}} {cumulative}"


def task_lines(client: valkey.Valkey, node_id: str) -> Iterable[str]:
    """This node's task counters and duration histogram, from Valkey.

    Raises:
        valkey.ConnectionError, valkey.TimeoutError: Valkey is unreachable.
    """
    with client.pipeline(transaction=False) as pipe:
        pipe.hgetall(store.stats_key(node_id))
        pipe.hgetall(store.duration_key(node_id))
        stats, durations = pipe.execute()
    finished = {}
    for field, value in stats.items():
        kind, _, operation = field.partition(":")
        if kind in ("complete", "failed"):
            finished[(operation, kind)] = int(value)
    yield "# HELP wizard_tasks_finished_total Tasks this node's workers ended, by outcome."
    yield "# TYPE wizard_tasks_finished_total counter"
    for (operation, outcome), count in sorted(finished.items()):
        yield (
            f'wizard_tasks_finished_total{{operation="{_escape(operation)}",'
            f'outcome="{outcome}"}} {count}'
        )
    for field, help_text in (
        ("retried", "Attempts handed back for a retry (lost worker, timeout, shutdown)."),
        ("dead_lettered", "Tasks moved to the dead-letter queue."),
        ("fenced_writes", "Late results refused because the writer had lost its lease."),
    ):
        yield f"# HELP wizard_tasks_{field}_total {help_text}"
        yield f"# TYPE wizard_tasks_{field}_total counter"
        yield f"wizard_tasks_{field}_total {int(stats.get(field, 0))}"
    yield from _duration_lines(durations)


def _duration_lines(durations: dict[str, str]) -> Iterable[str]:
    name = "wizard_task_duration_seconds"
    yield f"# HELP {name} Time a worker spent on a task, from claim to recorded outcome."
    yield f"# TYPE {name} histogram"
    operations = sorted({field.split("|")[0] for field in durations})
    for operation in operations:
        finite = [
            (str(upper / 1000), int(durations.get(f"{operation}|{upper}", 0)))
            for upper in DURATION_BUCKETS_MS
        ]
        overflow = int(durations.get(f"{operation}|+Inf", 0))
        total = float(durations.get(f"{operation}|sum", 0)) / 1000
        label = f'operation="{_escape(operation)}"'
        yield from _histogram(name, label, finite, overflow, total)


def queue_lines(client: valkey.Valkey) -> Iterable[str]:
    """Gauges read from the shared queue at scrape time (cluster-wide).

    Raises:
        valkey.ConnectionError, valkey.TimeoutError: Valkey is unreachable.
    """
    snapshot = queue_snapshot(client)
    gauges = (
        ("wizard_queue_pending_tasks", "Tasks waiting in task_queue.", snapshot["pending"]),
        ("wizard_queue_delayed_tasks", "Tasks waiting out a retry backoff.", snapshot["delayed"]),
        ("wizard_tasks_in_flight", "Tasks held by workers right now.", snapshot["in_flight"]),
        ("wizard_dead_letter_tasks", "Tasks in the dead-letter queue.", snapshot["dead_letter"]),
        ("wizard_workers_alive", "Workers with a live heartbeat.", snapshot["workers_alive"]),
        (
            "wizard_queue_oldest_pending_age_seconds",
            "Age of the task that has waited longest in task_queue.",
            snapshot["oldest_pending_age_seconds"],
        ),
    )
    for name, help_text, value in gauges:
        yield f"# HELP {name} {help_text}"
        yield f"# TYPE {name} gauge"
        yield f"{name} {value}"


def queue_snapshot(client: valkey.Valkey) -> dict:
    """Queue counts plus in-flight tasks, live workers and the oldest
    pending task's age (seconds, 0 when the queue is empty).

    Raises:
        valkey.ConnectionError, valkey.TimeoutError: Valkey is unreachable.
    """
    snapshot = queue.counts(client)
    processing = [store.processing_key(w) for w in queue.processing_workers(client)]
    workers = membership.registered(client)
    with client.pipeline(transaction=False) as pipe:
        for key in processing:
            pipe.llen(key)
        for worker_id in workers:
            membership.queue_is_alive(pipe, worker_id)
        pipe.lindex(store.TASK_QUEUE, -1)
        replies = pipe.execute()
    oldest = replies[-1]
    snapshot["in_flight"] = sum(replies[: len(processing)])
    snapshot["workers_alive"] = sum(replies[len(processing) : -1])
    snapshot["oldest_pending_age_seconds"] = 0.0
    if oldest is not None:
        created = client.hget(store.task_key(oldest), "created_at")
        if created is not None:
            age = max(0.0, time.time() - float(created))
            snapshot["oldest_pending_age_seconds"] = round(age, 3)
    return snapshot


def render(http: ApiMetrics, client: valkey.Valkey, node_id: str) -> str:
    """The whole exposition for ``GET /metrics``, every sample labelled
    ``node="<node_id>"``.

    Raises:
        valkey.ConnectionError, valkey.TimeoutError: Valkey is unreachable.
    """
    lines = [*http.lines(), *task_lines(client, node_id), *queue_lines(client)]
    node = f'node="{_escape(node_id)}"'
    return "\n".join(with_label(line, node) for line in lines) + "\n"


def with_label(line: str, label: str) -> str:
    """``line`` with ``label`` (``name="value"``) first among its sample's
    labels; comment lines (``# HELP``, ``# TYPE``) unchanged::

        >>> with_label('up{job="a"} 1', 'node="n1"')
        'up{node="n1",job="a"} 1'
        >>> with_label("up 1", 'node="n1"')
        'up{node="n1"} 1'
    """
    if line.startswith("#"):
        return line
    name, brace, rest = line.partition("{")
    if brace:
        return f"{name}{{{label},{rest}"
    name, _, value = line.partition(" ")
    return f"{name}{{{label}}} {value}"
