"""Valkey goes away and comes back: the node degrades, then recovers alone.

The story runs once for the module, on a Valkey of its own (a real
valkey-server on a free port, AOF in a temporary folder; the session's
Valkey is left alone) and one real node (``python -m wizard node``, one
worker, 0.2 s of work per task) on a free port:

1. Valkey is stopped (SIGTERM) while the worker waits for work. The node's
   API is asked everything and its answers and their times are recorded,
   until the worker has logged that it backs off.
2. Valkey is started again on the same port and folder; new tasks are
   submitted and must be consumed by the same worker process.
3. Tasks are submitted and Valkey is stopped at once, while most of them
   still wait in the queue and the worker is busy with one; it is started
   again (replaying its AOF) and the node is watched until every task ends.

Each test then checks one promise against what was recorded.
"""

from __future__ import annotations

import json
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
import valkey

from tests.support import alive, wait_for
from wizard import store
from wizard.cluster import LocalCluster, free_port

NODE = "node-1"
WORKER = f"{NODE}/w1"
#: (a, b) of the tasks submitted after the first outage, and before the second.
AFTER_RESTART = [(100 + n, 1) for n in range(3)]
BEFORE_OUTAGE = [(n, n + 1) for n in range(8)]
UNKNOWN_ID = "0" * 32


@dataclass
class Answer:
    """One HTTP answer given while Valkey was down."""

    status: int
    content_type: str
    retry_after: str | None
    body: dict
    seconds: float


@dataclass
class Outage:
    """What was seen before, during and after the outage."""

    worker_pid_before: int = 0
    worker_pid_after: int = 0
    worker_alive_after: bool = False
    answers: dict[str, Answer] = field(default_factory=dict)
    after_restart: dict[str, int] = field(default_factory=dict)
    before_outage: dict[str, int] = field(default_factory=dict)
    waiting_at_outage: int = 0
    finished: dict[str, dict] = field(default_factory=dict)
    task_keys: int = 0
    node_log: str = ""


def ask(session: requests.Session, method: str, url: str, body=None, **params) -> Answer:
    """Send one request; record the answer and how long it took, seconds."""
    started = time.perf_counter()
    response = session.request(method, url, params=params, json=body, timeout=10)
    seconds = time.perf_counter() - started
    return Answer(
        status=response.status_code,
        content_type=response.headers.get("Content-Type", ""),
        retry_after=response.headers.get("Retry-After"),
        body=response.json(),
        seconds=seconds,
    )


def submit(session: requests.Session, base: str, pairs) -> dict[str, int]:
    """POST each (a, b) as an add; task id -> expected sum."""
    accepted = {}
    for a, b in pairs:
        response = session.post(base + "/task", params={"a": a, "b": b}, timeout=10)
        assert response.status_code == 202, response.text
        accepted[response.json()["task_id"]] = a + b
    return accepted


def worker_card(client: valkey.Valkey) -> dict:
    card = client.hget(store.WORKER_REGISTRY, WORKER)
    return json.loads(card) if card else {}


def while_down(session: requests.Session, base: str) -> dict[str, Answer]:
    """Ask the node everything while Valkey is down."""
    return {
        "POST /task": ask(session, "POST", base + "/task", a=1, b=2),
        "POST /task as JSON": ask(session, "POST", base + "/task", body={"a": 1, "b": 2}),
        "GET /tasks/<id>/status": ask(session, "GET", f"{base}/tasks/{UNKNOWN_ID}/status"),
        "GET /valkey_test": ask(session, "GET", base + "/valkey_test"),
        "GET /readyz": ask(session, "GET", base + "/readyz"),
        "GET /tasks": ask(session, "GET", base + "/tasks"),
        "GET /cluster": ask(session, "GET", base + "/cluster"),
        "GET /healthz": ask(session, "GET", base + "/healthz"),
    }


def worker_backed_off(log: Path) -> bool:
    """True once the worker itself has logged that Valkey is unreachable."""
    for text in log.read_text().splitlines():
        line = json.loads(text)
        if line["process"] == WORKER and line.get("kind") == "connection":
            return True
    return False


def all_ended(client: valkey.Valkey, task_ids) -> dict[str, dict] | None:
    tasks = {task_id: client.hgetall(store.task_key(task_id)) for task_id in task_ids}
    done = all(t.get("status") in ("complete", "failed") for t in tasks.values())
    return tasks if done else None


def run_the_story(cluster: LocalCluster, client: valkey.Valkey) -> Outage:
    """Two outages: one while the worker waits for work (it backs off), one
    while tasks wait in the queue and the worker is busy with one of them."""
    seen = Outage()
    session = requests.Session()
    base = cluster.node_url(NODE)
    log = cluster.var_dir / "logs" / f"{NODE}.log"
    seen.worker_pid_before = worker_card(client)["pid"]

    cluster.kill_valkey(signal.SIGTERM)
    seen.answers = while_down(session, base)
    wait_for(lambda: worker_backed_off(log), timeout=10, what="the worker backs off")
    seen.answers["POST /task after the worker backed off"] = ask(
        session, "POST", base + "/task", a=3, b=4
    )
    cluster.start_valkey()
    seen.after_restart = submit(session, base, AFTER_RESTART)
    wait_for(
        lambda: all_ended(client, seen.after_restart), timeout=20, interval=0.1, what="new tasks"
    )

    seen.before_outage = submit(session, base, BEFORE_OUTAGE)
    seen.waiting_at_outage = client.llen(store.TASK_QUEUE)
    cluster.kill_valkey(signal.SIGTERM)
    cluster.start_valkey()
    every = [*seen.before_outage, *seen.after_restart]
    seen.finished = wait_for(
        lambda: all_ended(client, every), timeout=30, interval=0.1, what="all tasks end"
    )
    seen.worker_pid_after = worker_card(client)["pid"]
    seen.worker_alive_after = alive(seen.worker_pid_before)
    seen.task_keys = len(list(client.scan_iter(match=store.TASK_PREFIX + "*")))
    seen.node_log = log.read_text()
    session.close()
    return seen


@pytest.fixture(scope="module")
def outage(tmp_path_factory) -> Outage:
    cluster = LocalCluster(
        gateway_port=free_port(),
        nodes=1,
        workers=1,
        var_dir=tmp_path_factory.mktemp("outage"),
        node_env={
            "WIZARD_WORK_SECONDS": "0.2",
            "WIZARD_BLOCK_SECONDS": "0.2",
            "WIZARD_LOG_LEVEL": "info",
        },
    )
    try:
        cluster.start_valkey()
        client = valkey.Valkey.from_url(cluster.admin_url, decode_responses=True)
        cluster.start_node(NODE)
        cluster.wait_node_ready(NODE)
        yield run_the_story(cluster, client)
        client.close()
    finally:
        cluster.stop()


REFUSED = [
    "POST /task",
    "POST /task as JSON",
    "POST /task after the worker backed off",
    "GET /tasks/<id>/status",
    "GET /valkey_test",
    "GET /readyz",
    "GET /tasks",
    "GET /cluster",
]


@pytest.mark.parametrize("asked", REFUSED)
def test_while_valkey_is_down_the_api_answers_a_503_problem_with_retry_after(outage, asked):
    answer = outage.answers[asked]
    assert answer.status == 503
    assert answer.content_type == "application/problem+json"
    assert answer.retry_after is not None and int(answer.retry_after) >= 1
    assert answer.body["status"] == 503
    assert answer.body["type"].endswith("/service-unavailable")
    assert answer.body["title"] == "Service Unavailable"
    assert answer.body["handled_by"] == NODE
    assert "Valkey" in answer.body["detail"]


@pytest.mark.parametrize("asked", REFUSED)
def test_while_valkey_is_down_each_refusal_comes_in_under_a_second(outage, asked):
    assert outage.answers[asked].seconds < 1.0


def test_while_valkey_is_down_the_process_still_says_it_is_alive(outage):
    answer = outage.answers["GET /healthz"]
    assert answer.status == 200
    assert answer.seconds < 1.0


def test_the_worker_process_survives_the_outage_without_being_restarted(outage):
    assert outage.worker_alive_after
    assert outage.worker_pid_after == outage.worker_pid_before
    assert "died; restarting" not in outage.node_log


def test_tasks_submitted_before_the_outage_still_complete(outage):
    assert outage.waiting_at_outage > 0, "no task was waiting when Valkey stopped"
    for task_id, total in outage.before_outage.items():
        task = outage.finished[task_id]
        assert task["status"] == "complete", task
        assert json.loads(task["result"]) == total


def test_after_valkey_restarts_the_same_worker_consumes_new_tasks(outage):
    for task_id, total in outage.after_restart.items():
        task = outage.finished[task_id]
        assert task["status"] == "complete", task
        assert json.loads(task["result"]) == total
        assert task["handled_by"] == WORKER


def test_a_task_refused_during_the_outage_was_never_stored(outage):
    assert outage.task_keys == len(outage.before_outage) + len(outage.after_restart)
