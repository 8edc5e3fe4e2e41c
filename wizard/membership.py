"""Membership: which workers exist, which are alive, and what each is doing.

Every worker writes a *beat* every ``heartbeat_seconds``: its card (a small
JSON object, :class:`WorkerCard`) goes to two places in one round trip:

- ``worker:<id>``, a string that expires after one lease: it exists exactly
  while the worker is alive (the reaper and ``/readyz`` check it);
- the ``workers`` hash, field ``<id>``: the last card of every worker in
  the membership, so ``/cluster`` can show a dead one greyed out (DOWN).

Leaving the membership, bounded: a worker that stops cleanly (SIGTERM)
signs off, which deletes both at once (:func:`sign_off`); one that dies
stays DOWN until :data:`STALE_AFTER` seconds after its last beat, when the
leading scheduler forgets it (:func:`forget_stale`) and ``/cluster`` leaves
it out; a launcher starting a new cluster forgets every worker without a
heartbeat at once (:func:`forget_silent`).

A worker id is ``<node>/w<n>`` (:func:`worker_id`), built only here::

    >>> worker_id("node-1", 2)
    'node-1/w2'
    >>> card = WorkerCard("node-1/w2", node="node-1", pid=41, started=1699999990.0,
    ...                   at=1700000000.0)
    >>> sorted(json.loads(card.to_json()))
    ['at', 'node', 'pid', 'started', 'task_id', 'tasks_done']
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import valkey

from . import store

#: A worker whose last beat is older than this is left out of ``/cluster``
#: and forgotten by the scheduler, seconds (five minutes: long enough to see
#: a dead node DOWN on the dashboard, short enough not to linger).
STALE_AFTER = 300.0


def worker_id(node_id: str, n: int) -> str:
    """The id of worker number ``n`` (1, 2, ...) of node ``node_id``."""
    return f"{node_id}/w{n}"


def worker_number(worker: str) -> str:
    """The part of a worker id after its node: ``w2`` for ``node-1/w2``."""
    return worker.rpartition("/")[2]


def node_worker_ids(node_id: str, workers: int) -> list[str]:
    """The ids of the ``workers`` workers a node runs, in order."""
    return [worker_id(node_id, n) for n in range(1, workers + 1)]


@dataclass(frozen=True)
class WorkerCard:
    """One worker's last heartbeat, as stored (JSON) under its id.

    ``started`` is when the worker started and ``at`` when it beat (Unix
    seconds, the worker's clock); ``task_id`` the task it was running then
    (None when idle); ``tasks_done`` how many tasks it has recorded since
    it started.
    """

    worker_id: str
    node: str
    pid: int | None
    started: float
    at: float
    tasks_done: int = 0
    task_id: str | None = None

    def to_json(self) -> str:
        """The stored form: ``{"node", "pid", "started", "at", "tasks_done",
        "task_id"}``."""
        fields = {
            "node": self.node,
            "pid": self.pid,
            "started": self.started,
            "at": self.at,
            "tasks_done": self.tasks_done,
            "task_id": self.task_id,
        }
        return json.dumps(fields)

    @classmethod
    def from_json(cls, worker: str, text: str) -> WorkerCard:
        """Decode the stored form of ``worker``'s card."""
        fields = json.loads(text)
        return cls(
            worker_id=worker,
            node=fields.get("node", ""),
            pid=fields.get("pid"),
            started=fields.get("started", 0),
            at=fields.get("at", 0),
            tasks_done=fields.get("tasks_done", 0),
            task_id=fields.get("task_id"),
        )

    def age_seconds(self, now: float) -> float:
        """Seconds since this beat, never negative."""
        return max(0.0, now - self.at)


def beat(client: valkey.Valkey, card: WorkerCard, *, ttl_ms: int) -> int:
    """Write ``card``: the heartbeat key (expiring after ``ttl_ms``
    milliseconds) and the registry entry, in one round trip. Returns
    Valkey's clock at the beat (TIME), Unix microseconds.

    Raises:
        valkey.ConnectionError, valkey.TimeoutError: Valkey is unreachable.
    """
    text = card.to_json()
    with client.pipeline(transaction=False) as pipe:
        pipe.set(store.heartbeat_key(card.worker_id), text, px=ttl_ms)
        pipe.hset(store.WORKER_REGISTRY, card.worker_id, text)
        pipe.time()
        seconds, micros = pipe.execute()[-1]
    return seconds * 1_000_000 + micros


def sign_off(client: valkey.Valkey, worker: str) -> None:
    """``worker`` stopped on purpose: delete its heartbeat key and its card
    (it leaves the membership, so /cluster shows no DOWN worker), in one
    transaction.

    Raises:
        valkey.ConnectionError, valkey.TimeoutError: Valkey is unreachable.
    """
    with client.pipeline(transaction=True) as pipe:
        pipe.delete(store.heartbeat_key(worker))
        pipe.hdel(store.WORKER_REGISTRY, worker)
        pipe.execute()


def forget_silent(client: valkey.Valkey) -> list[str]:
    """Drop from the registry every worker without a heartbeat key (a new
    cluster starts: a worker of the last one that died is not coming back
    under this launcher). Returns their ids.

    Raises:
        valkey.ConnectionError, valkey.TimeoutError: Valkey is unreachable.
    """
    workers = registered(client)
    silent = [w for w, beating in zip(workers, alive(client, workers), strict=True) if not beating]
    if silent:
        client.hdel(store.WORKER_REGISTRY, *silent)
    return silent


def queue_is_alive(pipe: valkey.client.Pipeline, worker: str) -> None:
    """Add "does ``worker`` heartbeat?" to ``pipe`` (its reply: 1 or 0)."""
    pipe.exists(store.heartbeat_key(worker))


def alive(client: valkey.Valkey, workers: list[str]) -> list[bool]:
    """For each of ``workers``, whether its heartbeat key exists (one round
    trip).

    Raises:
        valkey.ConnectionError, valkey.TimeoutError: Valkey is unreachable.
    """
    with client.pipeline(transaction=False) as pipe:
        for worker in workers:
            queue_is_alive(pipe, worker)
        return [bool(found) for found in pipe.execute()]


def registered(client: valkey.Valkey) -> list[str]:
    """Ids of every worker in the registry, alive or not."""
    return list(client.hkeys(store.WORKER_REGISTRY))


def cards(client: valkey.Valkey) -> list[WorkerCard]:
    """Every card in the registry, sorted by worker id."""
    found = client.hgetall(store.WORKER_REGISTRY)
    return [WorkerCard.from_json(w, text) for w, text in sorted(found.items())]


def forget_stale(client: valkey.Valkey, now: float | None = None) -> list[str]:
    """Drop from the registry every worker whose last beat is more than
    :data:`STALE_AFTER` seconds before ``now`` (default: this clock).
    Returns their ids.

    Raises:
        valkey.ConnectionError, valkey.TimeoutError: Valkey is unreachable.
    """
    now = time.time() if now is None else now
    stale = [c.worker_id for c in cards(client) if now - c.at > STALE_AFTER]
    for worker in stale:
        client.hdel(store.WORKER_REGISTRY, worker)
    return stale


# --- every process, for /cluster ---------------------------------------------


def record_process(client: valkey.Valkey, name: str, *, pid: int, node: str, role: str) -> None:
    """Note that process ``name`` (``node-1/api``, ``nginx``...) now runs
    as ``pid`` in the :data:`store.PROCESS_REGISTRY` hash, replacing any
    earlier pid under that name. ``role`` is ``supervisor``, ``api``,
    ``worker``, ``scheduler``, ``gateway``, ``valkey`` or, with HA, ``valkey primary``,
    ``valkey replica`` (its role at start) and ``sentinel``; ``node`` is ''
    for the gateway and Valkey.

    Raises:
        valkey.ConnectionError, valkey.TimeoutError: Valkey is unreachable.
    """
    card = {"pid": pid, "node": node, "role": role, "at": time.time()}
    client.hset(store.PROCESS_REGISTRY, name, json.dumps(card))


def forget_processes(client: valkey.Valkey) -> None:
    """Empty the process registry (a launcher starting a new cluster).

    Raises:
        valkey.ConnectionError, valkey.TimeoutError: Valkey is unreachable.
    """
    client.delete(store.PROCESS_REGISTRY)


def forget_node_processes(client: valkey.Valkey, node: str) -> list[str]:
    """Drop node ``node``'s processes from the registry (it stopped
    cleanly). Returns their names.

    Raises:
        valkey.ConnectionError, valkey.TimeoutError: Valkey is unreachable.
    """
    names = [p["name"] for p in process_table(client) if p.get("node") == node]
    if names:
        client.hdel(store.PROCESS_REGISTRY, *names)
    return names


def process_table(client: valkey.Valkey) -> list[dict]:
    """Every recorded process, sorted by name: ``[{"name", "pid", "node",
    "role", "at"}]`` (``at``: when it started, Unix seconds).

    Raises:
        valkey.ConnectionError, valkey.TimeoutError: Valkey is unreachable.
    """
    found = client.hgetall(store.PROCESS_REGISTRY)
    return [{"name": name, **json.loads(text)} for name, text in sorted(found.items())]
