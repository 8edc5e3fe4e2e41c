"""The peers: the same drain by Dramatiq, Huey, RQ and Celery.

Each peer gets its own fresh Valkey (the project's valkey-server with
``ops/valkey/valkey.conf``, as the wizard's), speaks to it through redis-py
as it is built to, and drains the same trivial tasks (``a + b``, with the
finish time stored as its result: :mod:`peer_apps`):

1. the tasks are enqueued with the peer's own producer API while no worker
   runs (the Valkey memory before and after: bytes per pending task);
2. the peer's own worker command starts with P processes and drains them;
   Valkey's ``INFO commandstats`` and ``INFO cpu`` are read before and
   after: commands and server CPU per task;
3. every result is read back with the peer's API and checked; the rate is
   tasks / (last finish - first finish), as the wizard's is timed from its
   own records; the memory after (results kept): bytes per completed task.

How each runs (its usual production shape on Redis):

==========  ============================================================
Dramatiq    ``dramatiq`` CLI, Redis broker + Redis results, P processes x 8 threads
Huey        ``huey_consumer``, RedisHuey with results, P process workers
RQ          P ``rq worker --burst`` processes with SimpleWorker (no fork per job)
Celery      ``celery worker``, Redis broker + Redis backend, prefork pool of P
==========  ============================================================
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from wizard.cluster import EmbeddedValkey, free_port

HERE = Path(__file__).resolve().parent

#: Longest a peer may drain, seconds. A peer slower than about 20,000 / 25
#: tasks a second is stopped there and its rate taken from the tasks it
#: finished (each checked), so ``make bench`` stays within its minutes.
PEER_BUDGET = 25.0

#: Pause between two looks at a peer's progress, seconds (a handful of
#: commands per look, next to tens of thousands per drain).
POLL_SECONDS = 0.1


@dataclass(frozen=True)
class ServerStats:
    """Valkey's own counters at one moment: commands run (``INFO
    commandstats``, every command, those run by scripts too), CPU seconds
    (``INFO cpu``: user + system of the server), bytes in use (``INFO
    memory`` used_memory)."""

    commands: int
    cpu_seconds: float
    used_memory: int

    @classmethod
    def read(cls, client) -> ServerStats:
        """Read them from ``client``'s server (three INFO calls)."""
        stats = client.info("commandstats")
        cpu = client.info("cpu")
        memory = client.info("memory")
        return cls(
            commands=sum(found["calls"] for found in stats.values()),
            cpu_seconds=cpu["used_cpu_user"] + cpu["used_cpu_sys"],
            used_memory=memory["used_memory"],
        )


def per_task(before: ServerStats, after: ServerStats, tasks: int) -> dict:
    """Commands and server CPU (microseconds) per task between two readings."""
    return {
        "commands_per_task": round((after.commands - before.commands) / tasks, 2),
        "valkey_cpu_us_per_task": round((after.cpu_seconds - before.cpu_seconds) * 1e6 / tasks, 1),
    }


class Peer:
    """One peer: how to enqueue, how to start its workers, how to tell it is
    done, how to read the results back. Subclasses fill these in."""

    name = ""

    def __init__(self, url: str) -> None:
        self.url = url
        self.client = redis.Redis.from_url(url)

    def env(self) -> dict[str, str]:
        """The environment of its producer (this process) and workers."""
        return {"BENCH_REDIS_URL": self.url, "BENCH_PEER": self.name}

    def enqueue(self, pairs: list[tuple[int, int]]) -> list:
        """Enqueue one task per pair; returns the handles to read results."""
        raise NotImplementedError

    def workers(self, processes: int) -> list[list[str]]:
        """The worker command lines to start (each its own process group)."""
        raise NotImplementedError

    def done(self, tasks: int) -> bool:
        """True once every task has its result stored."""
        raise NotImplementedError

    def results(self, handles: list) -> list[list | None]:
        """Each task's stored result, ``[sum, finished_at]``, or None for a
        task not finished when the peer was stopped."""
        raise NotImplementedError


def _bin(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        raise RuntimeError(f"{name} is not installed: run make bench (installs .[bench])")
    return found


class Dramatiq(Peer):
    name = "dramatiq"

    def enqueue(self, pairs):
        import peer_apps

        return [peer_apps.dramatiq_add.send(a, b) for a, b in pairs]

    def workers(self, processes):
        argv = [_bin("dramatiq"), "peer_apps", "--processes", str(processes)]
        return [[*argv, "--threads", "8"]]

    def done(self, tasks):
        # Messages stay in the .msgs hash until acknowledged.
        return self.client.hlen("dramatiq:default.msgs") == 0

    def results(self, handles):
        import peer_apps
        from dramatiq.results import ResultMissing

        found = []
        for message in handles:
            try:
                found.append(peer_apps.dramatiq_backend.get_result(message))
            except ResultMissing:
                # Not finished when the peer was stopped.
                found.append(None)
        return found


class Huey(Peer):
    name = "huey"

    def enqueue(self, pairs):
        import peer_apps

        return [peer_apps.huey_add(a, b) for a, b in pairs]

    def workers(self, processes):
        consumer = [_bin("huey_consumer"), "peer_apps.huey", "-w", str(processes)]
        return [[*consumer, "-k", "process", "-n", "-q"]]

    def done(self, tasks):
        return self.client.hlen("huey.results.bench") >= tasks

    def results(self, handles):
        return [handle.get(preserve=True) for handle in handles]


class RQ(Peer):
    name = "rq"

    def enqueue(self, pairs):
        from rq import Queue

        queue = Queue("bench", connection=self.client)
        jobs = [Queue.prepare_data("peer_apps.add", args=(a, b)) for a, b in pairs]
        handles = []
        for start in range(0, len(jobs), 1000):
            handles.extend(queue.enqueue_many(jobs[start : start + 1000]))
        return handles

    def workers(self, processes):
        worker = [_bin("rq"), "worker", "--burst", "-w", "rq.worker.SimpleWorker"]
        return [[*worker, "-u", self.url, "-q", "bench"] for _ in range(processes)]

    def done(self, tasks):
        return self.client.zcard("rq:finished:bench") >= tasks

    def results(self, handles):
        return [job.return_value() for job in handles]


class Celery(Peer):
    name = "celery"

    def enqueue(self, pairs):
        import peer_apps

        # Only the ids are kept: Celery's result handles hold a connection
        # to the result store, read here directly instead.
        return [peer_apps.celery_add.delay(a, b).id for a, b in pairs]

    def workers(self, processes):
        worker = [_bin("celery"), "-A", "peer_apps.celery", "worker", "-c", str(processes)]
        quiet = ["--without-gossip", "--without-mingle", "--without-heartbeat"]
        return [[*worker, "-P", "prefork", *quiet, "-l", "warning"]]

    def done(self, tasks):
        return self.client.llen("celery") == 0 and self.client.dbsize() >= tasks

    def results(self, handles):
        import json

        # Celery's Redis backend: one JSON document per task, under
        # celery-task-meta-<id>; a task lost to the stop is not SUCCESS.
        stored = self.client.mget([f"celery-task-meta-{task_id}" for task_id in handles])
        metas = [json.loads(text) if text else {} for text in stored]
        return [m["result"] if m.get("status") == "SUCCESS" else None for m in metas]


PEERS = (Dramatiq, Huey, RQ, Celery)


def drain(peer_class, *, tasks: int, processes: int, var_dir: Path) -> dict:
    """Drain ``tasks`` tasks with ``processes`` worker processes of one peer
    on a fresh Valkey; returns the rate, the Valkey costs, the check.

    A peer still busy after PEER_BUDGET seconds is stopped; its figures are
    then those of the tasks it finished (``verified``).

    Raises:
        RuntimeError: the workers died, a result is wrong, or none finished.
    """
    server = EmbeddedValkey(free_port(), var_dir)
    server.start()
    started: list[subprocess.Popen] = []
    try:
        # The admin user of the fresh server (wizard/acl.py): the peers may
        # use any command and key, as on a Redis of their own.
        url = server.url.replace("valkey://", "redis://", 1)
        peer = peer_class(url)
        os.environ.update(peer.env())
        _fresh_import()
        pairs = [(n, 1) for n in range(tasks)]
        empty = ServerStats.read(peer.client)
        handles = peer.enqueue(pairs)
        pending = ServerStats.read(peer.client)
        env = {**os.environ, **peer.env(), "PYTHONPATH": str(HERE)}
        log = open(var_dir / f"{peer.name}-{processes}.log", "wb")  # noqa: SIM115
        for argv in peer.workers(processes):
            started.append(
                subprocess.Popen(
                    argv,
                    cwd=HERE,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        _wait_drained(peer, tasks, started)
        _stop(started)
        after = ServerStats.read(peer.client)
        found = peer.results(handles)
    finally:
        _stop(started)
        server.stop()
    done = [(pair, result) for pair, result in zip(pairs, found, strict=True) if result]
    wrong = [pair for pair, result in done if result[0] != sum(pair)]
    if wrong or not done:
        raise RuntimeError(f"{peer_class.name}: {len(wrong)} wrong, {len(done)} finished")
    finished = [result[1] for _, result in done]
    seconds = max(finished) - min(finished)
    pending_bytes = (pending.used_memory - empty.used_memory) / tasks
    return {
        "peer": peer_class.name,
        "processes": processes,
        "tasks": tasks,
        "verified": len(done),
        "seconds": seconds,
        "rate": len(done) / seconds,
        "rate_per_process": len(done) / seconds / processes,
        **per_task(pending, after, len(done)),
        "bytes_per_pending_task": round(pending_bytes),
        "bytes_per_completed_task": round(
            pending_bytes + (after.used_memory - pending.used_memory) / len(done)
        ),
    }


def _fresh_import() -> None:
    """Import peer_apps again, so it binds the URL and peer just set."""
    sys.modules.pop("peer_apps", None)
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))


def _wait_drained(peer: Peer, tasks: int, workers: list[subprocess.Popen]) -> None:
    """Wait until the peer is done or PEER_BUDGET seconds have passed."""
    deadline = time.monotonic() + PEER_BUDGET
    while not peer.done(tasks) and time.monotonic() < deadline:
        if all(w.poll() not in (None, 0) for w in workers):
            raise RuntimeError(f"{peer.name}: its workers exited; see its log")
        time.sleep(POLL_SECONDS)


def _stop(workers: list[subprocess.Popen]) -> None:
    """SIGTERM each worker's process group (its PID is the group's id),
    then SIGKILL after 15 s; every child of the peer's CLI goes with it."""
    for worker in workers:
        with contextlib.suppress(ProcessLookupError):
            # ProcessLookupError: the group is gone already (an RQ burst worker).
            os.killpg(worker.pid, signal.SIGTERM)
    for worker in workers:
        try:
            worker.wait(15)
        except subprocess.TimeoutExpired:
            # Still running past its own shutdown: kill the group.
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
