"""A frozen node (its API process stopped with SIGSTOP: it accepts
connections, through the kernel, but never answers) holds a request at the
gateway for seconds, not a minute: a POST /task gets a 504 that says to
retry with an Idempotency-Key, and that retry makes the task exactly once;
a GET /add that timed out is never sent to a second node; a read is
answered by another node.
"""

from __future__ import annotations

import json
import os
import signal
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import valkey

from tests.edge.gateway import Answer, get, new_address, request, send, unique
from tests.support import wait_for
from wizard import store

IDS = unique("edge-timeouts")


@dataclass
class Frozen:
    """node-2's API process, stopped: its pid and its address as nginx names
    it in $upstream_addr."""

    pid: int
    upstream: str
    node_url: str

    def thaw(self) -> None:
        """SIGCONT, then wait until it answers again."""
        os.kill(self.pid, signal.SIGCONT)
        wait_for(lambda: _answers(self.node_url + "/healthz"), what="node-2 thawed")


@pytest.fixture
def frozen(cluster) -> Frozen:
    """node-2's API process under SIGSTOP for the test, thawed after it."""
    url = cluster.node_url("node-2")
    pid = requests.get(url + "/whoami", timeout=5).json()["pid"]
    node = Frozen(pid, f"{cluster.host}:{cluster.node_ports['node-2']}", url)
    os.kill(pid, signal.SIGSTOP)
    try:
        yield node
    finally:
        node.thaw()


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        # Still catching up on what queued while it was stopped.
        return False


def access_log(cluster, request_id: str) -> dict:
    """The gateway's access-log line of ``request_id`` (flushed every 1 s)."""
    path = Path(cluster.var_dir) / "logs" / "nginx-access.log"

    def find():
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            if entry["request_id"] == request_id:
                return entry
        return None

    return wait_for(find, timeout=10, what=f"request {request_id} in the access log")


def until_timed_out(cluster, build, source: str = "") -> tuple[Answer, str]:
    """Send ``build(request_id)`` from a fresh address, up to 4 times (round
    robin over two nodes: one of every two goes to the frozen one), until
    the gateway answers 504. Returns that answer and its request id."""
    source = source or new_address()
    for _ in range(4):
        request_id = next(IDS)
        answer = send(cluster.gateway_port, build(request_id), source=source)
        # Within the client's 15 s: a 60 s hold would leave no answer.
        assert answer.status is not None, answer
        if answer.status == 504:
            return answer, request_id
    raise AssertionError("no request reached the frozen node")


def test_a_post_to_a_frozen_node_gets_a_504_asking_for_an_idempotency_key(cluster, frozen):
    def submit(request_id: str) -> bytes:
        return request(
            "POST",
            "/task?a=424242&b=1",
            Idempotency_Key=request_id,
            X_Request_ID=request_id,
        )

    answer, key = until_timed_out(cluster, submit)
    problem = answer.problem
    assert problem["status"] == 504
    assert "Idempotency-Key" in problem["detail"]
    assert answer.headers["retry-after"] == "1"
    # The POST reached the frozen node and was not re-sent to another one.
    assert access_log(cluster, key)["upstream"] == frozen.upstream


def operand(request_id: str) -> int:
    """An operand unique to one request (its id's number), to find its task."""
    return 515_000_000 + int(request_id.rsplit("-", 1)[1])


def test_retrying_the_timed_out_post_with_its_key_makes_the_task_once(cluster, frozen):
    def submit(request_id: str) -> bytes:
        path = f"/task?a={operand(request_id)}&b=1"
        return request("POST", path, Idempotency_Key=request_id, X_Request_ID=request_id)

    # The retry comes from the same client: an Idempotency-Key is scoped to
    # its client (the same key from another client names another task).
    client_address = new_address()
    _, key = until_timed_out(cluster, submit, source=client_address)
    frozen.thaw()
    # The thawed node carries out the POST it was holding (its log says so).
    node_log = Path(cluster.var_dir) / "logs" / "node-2.log"
    wait_for(lambda: key in node_log.read_text(), what="node-2 handled the held POST")
    retried = send(
        cluster.gateway_port,
        request("POST", f"/task?a={operand(key)}&b=1", Idempotency_Key=key),
        source=client_address,
    )
    assert retried.status == 202, retried
    # One task, whichever came first: the key made the retry safe.
    client = valkey.Valkey.from_url(cluster.admin_url, decode_responses=True)
    try:
        tasks = [
            k
            for k in client.scan_iter(store.task_key("*"))
            if client.hget(k, "a") == str(operand(key))
        ]
    finally:
        client.close()
    assert len(tasks) == 1, tasks
    assert json.loads(retried.body)["task_id"] == tasks[0].removeprefix(store.TASK_PREFIX)


def test_a_get_add_that_timed_out_is_never_sent_to_a_second_node(cluster, frozen):
    answer, request_id = until_timed_out(
        cluster, lambda request_id: get("/add?a=1&b=2", X_Request_ID=request_id)
    )
    assert answer.problem["status"] == 504
    # One upstream only: a second node would be listed after a comma.
    assert access_log(cluster, request_id)["upstream"] == frozen.upstream


def test_a_read_sent_to_a_frozen_node_is_answered_by_another(cluster, frozen):
    source = new_address()
    # Round robin over two nodes: one of two reads goes to the frozen one.
    request_ids = [next(IDS), next(IDS)]
    answers = [
        send(cluster.gateway_port, get("/whoami", X_Request_ID=request_id), source=source)
        for request_id in request_ids
    ]
    assert [a.status for a in answers] == [200, 200]
    assert {json.loads(a.body)["node"] for a in answers} == {"node-1"}
    # The read timed out on the frozen node and was sent on to the next one.
    tried = [access_log(cluster, request_id)["upstream"] for request_id in request_ids]
    assert any(upstream.startswith(frozen.upstream + ", ") for upstream in tried), tried
