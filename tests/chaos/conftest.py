"""Harness of the chaos suite: a real local cluster per scenario, load through
the real nginx gateway, and a ledger of every task that got a 202.

Each scenario records what it measured in ``RESULTS``; at the end of the
session the counts are written to ``var/chaos-results.json`` and printed, so
the table in docs/chaos.md can be checked against a fresh run. Every figure
there is counted by the harness (answers by status code, kills delivered,
attempts per task), never written in as a literal.
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
import valkey
from valkey.backoff import ExponentialBackoff
from valkey.retry import Retry
from valkey.sentinel import Sentinel

from tests.support import alive, results_reporter, wait_for
from wizard import acl, store
from wizard.cluster import ROOT, LocalCluster, free_port, http_ok
from wizard.ha import MASTER_NAME
from wizard.queue.policy import MAX_BACKOFF_SECONDS

#: What each scenario measured, by test name.
RESULTS: dict[str, dict] = {}

#: Time limit of one chaos or network-lab test, seconds (pytest-timeout;
#: the suite's default is 120). A scenario's tasks are CPU work, so on a
#: loaded machine they take longer; the waits inside fail on a stall
#: instead (:data:`STALL_SECONDS`), this only bounds the whole.
CHAOS_TEST_SECONDS = 300

#: Seconds without any accepted task ending after which
#: :meth:`Chaos.wait_all_finished` gives up: twice the longest retry delay
#: (a task retried many times may wait that long in the delayed set), far
#: above a lease (1.5 s), so only a task that will never end trips it.
STALL_SECONDS = 2 * MAX_BACKOFF_SECONDS

pytestmark = pytest.mark.chaos


report_results = results_reporter(ROOT / "var" / "chaos-results.json", RESULTS, "chaos")


@pytest.fixture
def start_cluster(tmp_path):
    """Start a LocalCluster with extra node settings; stopped after the test."""
    started = []

    def start(nodes=3, workers=2, ha=False, **env):
        settings = {
            "WIZARD_WORK_SECONDS": "0",
            "WIZARD_LEASE_SECONDS": "1.5",
            "WIZARD_BLOCK_SECONDS": "0.2",
            "WIZARD_RETRY_BASE_SECONDS": "0.2",
            "WIZARD_GRACE_SECONDS": "5",
            **{key: str(value) for key, value in env.items()},
        }
        cluster = LocalCluster(
            gateway_port=free_port(),
            nodes=nodes,
            workers=workers,
            var_dir=tmp_path / "var",
            node_env=settings,
            ha=ha,
            # The load comes from one address, far above the gateway's
            # per-address limits, which tests/edge checks on their own.
            gateway_limits=False,
        )
        started.append(cluster)
        cluster.start()
        return Chaos(cluster)

    yield start
    for cluster in started:
        cluster.stop()
        assert cluster.pids() == [], "a process of the cluster is still running"


@dataclass
class Chaos:
    """A running cluster plus the tools to load it, break it and audit it."""

    cluster: LocalCluster
    accepted: dict = field(default_factory=dict)  # task id -> expected result
    #: Every answer to a POST /task, by status code ("no answer": the
    #: connection failed). Only a 202 is a promise.
    answers: Counter = field(default_factory=Counter)
    #: 503s that carried a Retry-After header.
    retry_after: int = 0
    #: Every 503, counted by what refused (:func:`cause_of`).
    unavailable: Counter = field(default_factory=Counter)
    #: (sent, answered, status) of every submission, monotonic seconds.
    timeline: list = field(default_factory=list)
    #: SIGKILLs delivered to workers, and for each task the attempts of it
    #: that a killed worker held (a restarted worker keeps its id, and its
    #: list still shows the dead one's task until it is reaped: the attempt
    #: number tells the two apart).
    kills: int = 0
    held_by_killed: dict = field(default_factory=dict)
    killed_pids: set = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def refused(self) -> int:
        """Submissions that got no 202 (any other status, or no answer)."""
        with self._lock:
            return sum(n for status, n in self.answers.items() if status != 202)

    def __post_init__(self):
        self.valkey = valkey.Valkey.from_url(
            self.cluster.admin_url, decode_responses=True, socket_timeout=5
        )
        if self.cluster.ha is not None:
            # The auditor follows the primary too; its reads are safe to
            # retry, so a socket left on a dead primary is retried at once.
            sentinel = Sentinel(
                [_host_port(a) for a in self.cluster.ha.sentinel_addresses],
                sentinel_kwargs={"socket_timeout": 1, "socket_connect_timeout": 1},
            )
            self.valkey = sentinel.master_for(
                MASTER_NAME,
                username=acl.ADMIN_USER,
                password=self.cluster.ha.servers[0].admin_password,
                decode_responses=True,
                socket_timeout=5,
                socket_connect_timeout=1,
                retry=Retry(ExponentialBackoff(cap=1.0), 10),
                retry_on_error=[valkey.ConnectionError],
            )

    # --- load -----------------------------------------------------------

    def submit(self, session: requests.Session, a: int, b: int, operation: str = "add") -> None:
        """POST one task through the gateway; remember it if it got a 202."""
        sent = time.monotonic()
        try:
            response = session.post(
                f"{self.cluster.url}/task",
                params={"a": a, "b": b, "operation": operation},
                timeout=10,
            )
        except (requests.ConnectionError, requests.Timeout):
            # The gateway or a node is restarting, or a node's link is cut
            # with the request in flight: no 202, no promise.
            response = None
        with self._lock:
            status = "no answer" if response is None else response.status_code
            self.timeline.append((sent, time.monotonic(), status))
            self.answers[status] += 1
            if response is None:
                return
            if response.status_code == 202:
                self.accepted[response.json()["task_id"]] = _expected(operation, a, b)
            elif response.status_code == 503:
                self.retry_after += "Retry-After" in response.headers
                self.unavailable[cause_of(response.json().get("detail", ""))] += 1

    def answered_between(self, start: float, end: float) -> dict[str, int]:
        """Answers to requests sent after ``start`` and answered before
        ``end`` (monotonic seconds), by status code."""
        with self._lock:
            inside = [s for sent, got, s in self.timeline if sent >= start and got <= end]
        found = Counter(str(status) for status in inside)
        return dict(sorted(found.items()))

    def answers_by_status(self) -> dict[str, int]:
        """The answers as a JSON-friendly dict: status code -> count."""
        with self._lock:
            return {str(status): n for status, n in sorted(self.answers.items(), key=str)}

    def submit_many(self, count: int, *, threads: int = 8, operation: str = "add") -> None:
        """Submit ``count`` tasks from ``threads`` clients with keep-alive."""
        sessions = threading.local()

        def one(n: int) -> None:
            if not hasattr(sessions, "session"):
                sessions.session = requests.Session()
            self.submit(sessions.session, n, n + 1, operation)

        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(one, range(count)))

    def wait_accepted(self, more: int, timeout: float = 30.0) -> None:
        """Wait until ``more`` tasks beyond those accepted so far got a 202."""
        target = len(self.accepted) + more
        wait_for(lambda: len(self.accepted) >= target, timeout=timeout, what=f"{more} more 202s")

    def load(self, clients: int = 4, limit: int = 5000, backlog: int | None = None) -> Load:
        """Clients submitting one task after another until the block ends
        (each at most ``limit`` tasks, and none while more than ``backlog``
        wait in the queue): every scenario's steady load. The clients stop
        and are joined when the block ends, also on an error::

            with chaos.load(limit=3000):
                wait_for(lambda: len(chaos.accepted) >= 150, what="load before")
                ...  # break something; the load goes on
        """
        return Load(self, clients, limit, backlog)

    # --- breaking ---------------------------------------------------------

    def workers(self) -> dict[str, int]:
        """Live worker id -> pid, from the heartbeat registry."""
        cards = {w: json.loads(c) for w, c in self.valkey.hgetall(store.WORKER_REGISTRY).items()}
        # A worker we killed may take a moment to be gone: never pick it again.
        return {
            w: c["pid"]
            for w, c in cards.items()
            if alive(c["pid"]) and c["pid"] not in self.killed_pids
        }

    def kill_random_worker(self, rng: random.Random) -> set[str]:
        """Freeze a random live worker, note the tasks it holds, SIGKILL it.
        Returns the ids it held (each must show attempts > 1 at the end)."""
        # Restarted workers come back after their supervisor's backoff.
        while True:
            live = wait_for(self.workers, timeout=15, what="a live worker to kill")
            worker_id, pid = rng.choice(sorted(live.items()))
            try:
                os.kill(pid, signal.SIGSTOP)
                held = set(self.valkey.lrange(store.processing_key(worker_id), 0, -1))
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                # It ended on its own meanwhile (the deaths in the logs say
                # how): not a kill of ours. Pick again.
                self.killed_pids.add(pid)
                continue
            break
        self.killed_pids.add(pid)
        self.kills += 1
        running = set()
        for task_id in held:
            status, attempt = self.valkey.hmget(store.task_key(task_id), "status", "attempts")
            if status == "running":
                running.add(task_id)
                self.held_by_killed.setdefault(task_id, set()).add(int(attempt))
        return running

    # --- audit ------------------------------------------------------------

    def statuses(self) -> dict[str, dict]:
        """Every accepted task's hash, by id (one pipeline)."""
        ids = list(self.accepted)
        with self.valkey.pipeline(transaction=False) as pipe:
            for task_id in ids:
                pipe.hgetall(store.task_key(task_id))
            return dict(zip(ids, pipe.execute(), strict=True))

    def wait_all_finished(self, stall: float = STALL_SECONDS) -> dict[str, dict]:
        """Wait until every accepted task is complete or failed; return
        every accepted task's hash, by id.

        The simulated work is CPU time, so how long the tasks take depends
        on how busy the machine is; what must not happen is that they stop
        ending. So this waits as long as tasks keep ending, and fails once
        none has ended for ``stall`` seconds (a lost task never ends). The
        test's own time limit (:data:`CHAOS_TEST_SECONDS`) bounds the wait.

        Raises:
            AssertionError: no task ended for ``stall`` seconds.
        """
        ended_most, since = -1, time.monotonic()
        while True:
            tasks = self.statuses()
            ended = sum(t.get("status") in ("complete", "failed") for t in tasks.values())
            if ended == len(tasks):
                return tasks
            if ended > ended_most:
                ended_most, since = ended, time.monotonic()
            elif time.monotonic() - since > stall:
                raise AssertionError(
                    f"no accepted task ended for {stall:g} s: {len(tasks) - ended} of "
                    f"{len(tasks)} still unfinished"
                )
            time.sleep(0.2)

    def completions_logged(self) -> dict[str, int]:
        """How many "task complete" log lines each task id has, all nodes."""
        counts: dict[str, int] = {}
        for log_file in Path(self.cluster.var_dir, "logs").glob("node-*.log"):
            for line in log_file.read_text().splitlines():
                if '"task complete"' in line:
                    task_id = json.loads(line)["task_id"]
                    counts[task_id] = counts.get(task_id, 0) + 1
        return counts

    def restarts(self) -> dict[str, int]:
        """Every restart the nodes' supervisors counted, by process."""
        found = {}
        for key in self.valkey.scan_iter(match=store.RESTARTS_PREFIX + "*"):
            node = key[len(store.RESTARTS_PREFIX) :]
            for child, card in self.valkey.hgetall(key).items():
                name = child if "/" in child else f"{node}/{child}"
                found[name] = json.loads(card)["restarts"]
        return {name: n for name, n in sorted(found.items()) if n}

    def supervisor_pids(self) -> dict[str, int]:
        """Each node's supervisor pid (a node restarted would change it)."""
        return {name: part.pid for name, part in self.cluster.nodes.items()}

    def troubles_logged(self) -> Counter:
        """Lines logged by the nodes about Valkey trouble, by kind."""
        kinds: Counter = Counter()
        for log_file in Path(self.cluster.var_dir, "logs").glob("node-*.log"):
            for line in log_file.read_text().splitlines():
                if line.startswith("{") and '"kind"' in line:
                    record = json.loads(line)
                    kinds[record["kind"]] += record["level"] == "warning"
        return kinds

    def all_ready(self) -> bool:
        """Every node answers /readyz with 200 and /cluster shows every
        worker alive."""
        for name in self.cluster.nodes:
            if not http_ok(self.cluster.node_url(name) + "/readyz"):
                return False
        try:
            view = requests.get(self.cluster.url + "/cluster", timeout=5).json()
        except (requests.RequestException, ValueError):
            # The gateway is between nodes: not ready yet.
            return False
        workers = [w for node in view.get("nodes", []) for w in node["workers"]]
        expected = len(self.cluster.nodes) * self.cluster.workers
        return sum(w["alive"] for w in workers) == expected and not view["problems"]

    def non_json_log_lines(self) -> list[str]:
        """Lines of the nodes' logs (stdout and stderr) that are not JSON:
        a raw traceback would show up here."""
        found = []
        for log_file in Path(self.cluster.var_dir, "logs").glob("node-*.log"):
            lines = log_file.read_text().splitlines()
            found += [line for line in lines if not line.startswith("{")]
        return found

    def errors_logged(self) -> list[dict]:
        """Every log line of the nodes at level error or critical (an
        unexpected error in a loop, a crash hook firing)."""
        found = []
        for log_file in Path(self.cluster.var_dir, "logs").glob("node-*.log"):
            for line in log_file.read_text().splitlines():
                if line.startswith("{"):
                    record = json.loads(line)
                    found += [record] if record["level"] in ("error", "critical") else []
        return found

    def deaths(self) -> list[dict]:
        """Every "died; restarting" line of the nodes' supervisors."""
        found = []
        for log_file in Path(self.cluster.var_dir, "logs").glob("node-*.log"):
            for line in log_file.read_text().splitlines():
                if "died; restarting" in line:
                    found.append(json.loads(line))
        return found

    def stat(self, field_name: str) -> int:
        """A counter summed over every node's stats hash."""
        total = 0
        for key in self.valkey.scan_iter(match=store.STATS_PREFIX + "*"):
            total += int(self.valkey.hget(key, field_name) or 0)
        return total


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


class Load:
    """A context manager: ``clients`` threads submit tasks through the
    gateway, one after another, until the block ends.

    With ``backlog``, a client holds its next task while more than
    ``backlog`` tasks wait in the queue: the load goes on through every
    fault, but the work left when the block ends stays bounded however slow
    the machine is (the simulated work is CPU time)."""

    def __init__(self, chaos: Chaos, clients: int, limit: int, backlog: int | None) -> None:
        self.chaos = chaos
        self.limit = limit
        self.backlog = backlog
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._submit) for _ in range(clients)]

    def _submit(self) -> None:
        session = requests.Session()
        n = 0
        while not self.stop.is_set() and n < self.limit:
            if self._queue_full():
                self.stop.wait(0.05)
                continue
            self.chaos.submit(session, n, 1)
            n += 1
        session.close()

    def _queue_full(self) -> bool:
        if self.backlog is None:
            return False
        try:
            return self.chaos.valkey.llen(store.TASK_QUEUE) > self.backlog
        except valkey.ValkeyError:
            # Valkey is in trouble (the scenario's fault): submit anyway, the
            # API answers for itself.
            return False

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()


def cause_of(detail: str) -> str:
    """What a 503 says refused the request, in one word."""
    lowered = detail.lower()
    for cause in ("loading", "out of memory", "did not answer", "unreachable", "refused"):
        if cause in lowered:
            return cause
    return "other"


def _expected(operation: str, a: int, b: int):
    return {"add": a + b, "multiply": a * b, "subtract": a - b}.get(operation)


def every(seconds: float, times: int, action) -> None:
    """Run ``action`` ``times`` times, one every ``seconds`` (a metronome for
    fault injection, not a guess at readiness)."""
    next_at = time.monotonic()
    for _ in range(times):
        next_at += seconds
        action()
        time.sleep(max(0.0, next_at - time.monotonic()))
