"""Harness of the chaos suite: a real local cluster per scenario, load through
the real nginx gateway, and a ledger of every task that got a 202.

Each scenario records what it measured in ``RESULTS``; at the end of the
session the counts are written to ``var/chaos-results.json`` and printed, so
the table in docs/chaos.md can be checked against a fresh run.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
import valkey
from valkey.backoff import ExponentialBackoff
from valkey.retry import Retry
from valkey.sentinel import Sentinel

from tests.support import alive, wait_for
from wizard import acl, store
from wizard.cluster import ROOT, LocalCluster, free_port
from wizard.ha import MASTER_NAME

#: What each scenario measured, by test name.
RESULTS: dict[str, dict] = {}

pytestmark = pytest.mark.chaos


@pytest.fixture(scope="session", autouse=True)
def report_results():
    yield
    if RESULTS:
        path = ROOT / "var" / "chaos-results.json"
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(RESULTS, indent=2, sort_keys=True))
        print("\nchaos results:", json.dumps(RESULTS, sort_keys=True))


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
    refused: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

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
            if response is not None and response.status_code == 202:
                self.accepted[response.json()["task_id"]] = _expected(operation, a, b)
            else:
                self.refused += 1

    def submit_many(self, count: int, *, threads: int = 8, operation: str = "add") -> None:
        """Submit ``count`` tasks from ``threads`` clients with keep-alive."""
        sessions = threading.local()

        def one(n: int) -> None:
            if not hasattr(sessions, "session"):
                sessions.session = requests.Session()
            self.submit(sessions.session, n, n + 1, operation)

        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(one, range(count)))

    # --- breaking ---------------------------------------------------------

    def workers(self) -> dict[str, int]:
        """Live worker id -> pid, from the heartbeat registry."""
        cards = {w: json.loads(c) for w, c in self.valkey.hgetall(store.WORKER_REGISTRY).items()}
        return {w: c["pid"] for w, c in cards.items() if alive(c["pid"])}

    def kill_random_worker(self, rng: random.Random) -> set[str]:
        """Freeze a random live worker, note the tasks it holds, SIGKILL it.
        Returns the ids it held (each must show attempts > 1 at the end)."""
        # Restarted workers come back after their supervisor's backoff.
        live = wait_for(self.workers, timeout=15, what="a live worker to kill")
        worker_id, pid = rng.choice(sorted(live.items()))
        try:
            os.kill(pid, signal.SIGSTOP)
        except ProcessLookupError:
            # It died after the registry was read: nothing to kill this time.
            return set()
        held = set(self.valkey.lrange(store.processing_key(worker_id), 0, -1))
        with contextlib.suppress(ProcessLookupError):
            # A zombie already when stopped, reaped since: it is dead anyway.
            os.kill(pid, signal.SIGKILL)
        return {t for t in held if self.valkey.hget(store.task_key(t), "status") == "running"}

    # --- audit ------------------------------------------------------------

    def statuses(self) -> dict[str, dict]:
        """Every accepted task's hash, by id (one pipeline)."""
        ids = list(self.accepted)
        with self.valkey.pipeline(transaction=False) as pipe:
            for task_id in ids:
                pipe.hgetall(store.task_key(task_id))
            return dict(zip(ids, pipe.execute(), strict=True))

    def wait_all_finished(self, timeout: float = 60.0) -> dict[str, dict]:
        """Wait until every accepted task is complete or failed."""

        def finished():
            tasks = self.statuses()
            done = all(t.get("status") in ("complete", "failed") for t in tasks.values())
            return tasks if done else None

        return wait_for(finished, timeout=timeout, interval=0.2, what="every accepted task ends")

    def completions_logged(self) -> dict[str, int]:
        """How many "task complete" log lines each task id has, all nodes."""
        counts: dict[str, int] = {}
        for log_file in Path(self.cluster.var_dir, "logs").glob("node-*.log"):
            for line in log_file.read_text().splitlines():
                if '"task complete"' in line:
                    task_id = json.loads(line)["task_id"]
                    counts[task_id] = counts.get(task_id, 0) + 1
        return counts

    def stat(self, field_name: str) -> int:
        """A counter summed over every node's stats hash."""
        total = 0
        for key in self.valkey.scan_iter(match=store.STATS_PREFIX + "*"):
            total += int(self.valkey.hget(key, field_name) or 0)
        return total


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


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
