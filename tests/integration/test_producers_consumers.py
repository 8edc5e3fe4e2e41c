"""Many producers, many consumers, one queue: every task is done exactly once.

Three real nodes (``python -m wizard node``, one worker each, no simulated
work) run as subprocesses on free ports against the session's Valkey, their
logs in files. Three producers (the WSGI apps of node-1..3, in-process, one
thread each) submit 1,000 tasks; the nodes' worker processes consume them.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections import Counter

import pytest
import requests
import valkey

from tests.support import alive, call, wait_for
from wizard import queue, store
from wizard.api import make_app
from wizard.cluster import LocalCluster, children_of, free_port

NODES = ("node-1", "node-2", "node-3")
WORKERS = {f"{node}/w1" for node in NODES}
TASKS = 1000
OPERATIONS = ("add", "subtract", "multiply", "divide")


def expected(operation: str, a: int, b: int):
    """The answer, worked out here rather than by wizard.operations."""
    if operation == "add":
        return a + b
    if operation == "subtract":
        return a - b
    if operation == "multiply":
        return a * b
    return a // b if a % b == 0 else a / b


def descendants(pid: int) -> list[int]:
    found = []
    for child in children_of(pid):
        found += [child, *descendants(child)]
    return found


@pytest.fixture(scope="module")
def nodes(valkey_server, tmp_path_factory):
    """Three real nodes with one worker each, ready (workers heartbeating)."""
    cluster = LocalCluster(
        gateway_port=free_port(),
        nodes=len(NODES),
        workers=1,
        var_dir=tmp_path_factory.mktemp("nodes"),
        valkey_url=valkey_server.url,
        node_env={
            "WIZARD_WORK_SECONDS": "0",
            "WIZARD_BLOCK_SECONDS": "0.2",
            # Heartbeats every second, so they are back soon after a flush.
            "WIZARD_LEASE_SECONDS": "3",
        },
    )
    # An empty database first: a task an earlier test left in the queue
    # would be run by these workers and counted after the test's flush.
    valkey.Valkey.from_url(valkey_server.url).flushall()
    pids: list[int] = []
    try:
        for name in NODES:
            cluster.start_node(name)
        for name in NODES:
            cluster.wait_node_ready(name)
        pids = [pid for part in cluster.parts() for pid in [part.pid, *descendants(part.pid)]]
        assert len(pids) >= 4 * len(NODES), "each node runs an API, a worker and a scheduler"
        yield cluster
    finally:
        cluster.stop()
    wait_for(lambda: not any(alive(pid) for pid in pids), timeout=10, what="nodes gone")


@pytest.fixture
def consumers(nodes, client):
    """The nodes, once every worker heartbeats again on the flushed database.

    The ``client`` fixture empties Valkey before each test, heartbeats
    included; until a worker beats again the reaper would take it for dead
    and hand its task to another worker (a second attempt).
    """
    keys = [store.heartbeat_key(worker) for worker in WORKERS]
    wait_for(lambda: client.exists(*keys) == len(keys), timeout=5, what="heartbeats")
    return nodes


def complete_lines(cluster: LocalCluster) -> list[dict]:
    """Every "task complete" line the nodes' workers logged."""
    lines = []
    for name in NODES:
        for text in (cluster.var_dir / "logs" / f"{name}.log").read_text().splitlines():
            if '"task complete"' in text:
                lines.append(json.loads(text))
    return lines


def produce(app, jobs: list[tuple[str, int, int]], accepted: dict) -> None:
    """Submit ``jobs`` through ``app``; record task id -> (job, node)."""
    for operation, a, b in jobs:
        response = call(app, "POST", "/task", query={"a": a, "b": b, "operation": operation})
        assert response.status == 202, response.body
        accepted[response.json()["task_id"]] = (operation, a, b, app.settings.node_id)


def submit_from_three_producers(settings) -> dict:
    jobs = [(OPERATIONS[i % 4], i, i % 5 + 1) for i in range(TASKS)]
    apps = [make_app(dataclasses.replace(settings, node_id=node)) for node in NODES]
    accepted: dict = {}
    threads = [
        threading.Thread(target=produce, args=(app, jobs[n :: len(apps)], accepted))
        for n, app in enumerate(apps)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for app in apps:
        app.client.close()
    return accepted


def all_finished(client, task_ids: list[str]):
    tasks = queue.read_tasks(client, task_ids)
    done = len(tasks) == len(task_ids) and all(t.status.value == "complete" for t in tasks)
    return tasks if done else None


def test_a_thousand_tasks_from_three_producers_are_each_done_once_by_three_workers(
    consumers, settings, client
):
    accepted = submit_from_three_producers(settings)
    assert len(accepted) == TASKS

    tasks = wait_for(lambda: all_finished(client, list(accepted)), timeout=40, interval=0.1)

    for task in tasks:
        operation, a, b, producer = accepted[task.task_id]
        answer = expected(operation, a, b)
        assert task.result == answer and type(task.result) is type(answer), task
        assert task.attempts == 1, task
        assert task.accepted_by == producer
    handlers = Counter(task.handled_by for task in tasks)
    assert set(handlers) == WORKERS, handlers

    def completed() -> int:
        # Workers add their counts once a second: wait for the last flush.
        fields = [client.hgetall(store.stats_key(node)).items() for node in NODES]
        return sum(int(n) for found in fields for f, n in found if f.startswith("complete:"))

    wait_for(lambda: completed() >= TASKS, timeout=10, what="every count flushed")
    assert completed() == TASKS
    assert client.llen(store.TASK_QUEUE) == 0
    assert client.llen(store.DEAD_LETTER_QUEUE) == 0

    def logged_once():
        lines = [line for line in complete_lines(consumers) if line["task_id"] in accepted]
        return lines if len(lines) >= TASKS else None

    lines = wait_for(logged_once, timeout=10, what="a log line for every task")
    per_task = Counter(line["task_id"] for line in lines)
    assert set(per_task) == set(accepted)
    assert set(per_task.values()) == {1}, "a task was completed twice"
    by_id = {task.task_id: task.handled_by for task in tasks}
    assert all(line["process"] == by_id[line["task_id"]] for line in lines)


def test_a_task_submitted_on_one_node_is_read_from_another(consumers):
    session = requests.Session()
    posted = session.post(
        consumers.node_url("node-1") + "/task", params={"a": 20, "b": 22}, timeout=5
    )
    assert posted.status_code == 202
    status_url = consumers.node_url("node-2") + posted.headers["Location"]

    def complete():
        body = session.get(status_url, timeout=5).json()
        return body if body["status"] == "complete" else None

    body = wait_for(complete, timeout=10, what="the task completes")
    assert body["result"] == 42
    assert body["accepted_by"] == "node-1"
    assert body["checked_by"] == "node-2"
    assert body["handled_by"] in WORKERS
    session.close()
