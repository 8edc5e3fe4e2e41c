"""The logs, read the way an operator reads them: one grep follows a request.

A real local cluster (embedded Valkey, two nodes with one worker each, real
nginx) writes ``var_dir/logs/node-N.log`` (every process of node N: one JSON
object per line) and ``nginx-access.log`` (the gateway, JSON too). A request
sent with a chosen ``X-Request-ID`` must come back with it and be findable by
it in the gateway's access log and the API's request line; the task it
created must be findable by its id in the accepting node's log and in the
"task complete" line of the worker that ran it.
"""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import pytest
import requests

from tests.contract.openapi_contract import Contract
from tests.support import WsgiResponse, wait_for
from wizard.cluster import LocalCluster, free_port

#: Fields every line of a node's log carries.
COMMON_FIELDS = {"time", "level", "event", "node", "process"}

#: How long a line may take to reach its file: nginx buffers its access log
#: and flushes it every second (ops/nginx, ``flush=1s``).
LOG_TIMEOUT = 5.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Valkey, two nodes (one worker each, no simulated work, debug logs)
    and nginx on free ports; stopped by PID after the module."""
    local = LocalCluster(
        gateway_port=free_port(),
        nodes=2,
        workers=1,
        var_dir=tmp_path_factory.mktemp("cluster"),
        node_env={"WIZARD_WORK_SECONDS": "0", "WIZARD_LOG_LEVEL": "debug"},
    )
    try:
        local.start()
        yield local
    finally:
        local.stop()


def lines(path: Path) -> list[dict]:
    """Every complete line of a JSON-lines log, decoded (none if no file yet).

    Raises:
        AssertionError: a line is not one JSON object.
    """
    if not path.exists():
        return []
    decoded = []
    *complete, _partial = path.read_text().split("\n")
    for text in complete:
        try:
            value = json.loads(text)
        except ValueError:
            # Not JSON: the format the operators grep for is broken.
            raise AssertionError(f"{path.name}: not a JSON line: {text!r}") from None
        assert isinstance(value, dict), f"{path.name}: not a JSON object: {text!r}"
        decoded.append(value)
    return decoded


def wait_for_line(path: Path, what: str, **fields) -> dict:
    """The first line of ``path`` holding all ``fields``, waited for."""

    def found() -> dict | None:
        for line in lines(path):
            if all(line.get(name) == value for name, value in fields.items()):
                return line
        return None

    return wait_for(found, timeout=LOG_TIMEOUT, what=f"{what} in {path.name}")


def wait_for_processes(path: Path, processes: set[str]) -> list[dict]:
    """The lines of ``path``, once each of ``processes`` has written one."""

    def all_have_logged() -> list[dict]:
        found = lines(path)
        return found if processes <= {line.get("process") for line in found} else []

    return wait_for(all_have_logged, timeout=LOG_TIMEOUT, what=f"{processes} in {path.name}")


def through_gateway(response: requests.Response) -> WsgiResponse:
    """A response read through nginx, in the shape the contract checks."""
    status = f"{response.status_code} {response.reason}"
    return WsgiResponse(status, list(response.headers.items()), response.content)


def log_of(cluster: LocalCluster, name: str) -> Path:
    """The log file of node ``name`` or of ``nginx-access``."""
    return cluster.var_dir / "logs" / f"{name}.log"


def test_one_request_id_and_one_task_id_follow_a_task_through_every_log(cluster):
    request_id = f"contract-{uuid.uuid4().hex[:12]}"
    response = requests.post(
        f"{cluster.url}/task",
        params={"a": 6, "b": 7, "operation": "multiply"},
        headers={"X-Request-ID": request_id},
        timeout=5,
    )
    assert response.status_code == 202
    assert response.headers["X-Request-ID"] == request_id
    Contract.load().check_response("POST", "/task", through_gateway(response))
    task_id, accepted_by = response.json()["task_id"], response.json()["accepted_by"]

    gateway = wait_for_line(
        log_of(cluster, "nginx-access"), "the gateway's line", request_id=request_id
    )
    assert (gateway["method"], gateway["status"]) == ("POST", 202)
    assert gateway["uri"].startswith("/task?")
    api = wait_for_line(
        log_of(cluster, accepted_by),
        "the API's request line",
        request_id=request_id,
        event="request",
    )
    assert (api["process"], api["path"], api["status"]) == ("api", "/task", 202)
    accepted = wait_for_line(
        log_of(cluster, accepted_by), "the accepted task", task_id=task_id, event="task accepted"
    )
    assert accepted["request_id"] == request_id

    def finished() -> dict | None:
        status = requests.get(f"{cluster.url}/tasks/{task_id}/status", timeout=5).json()
        return status if status["status"] == "complete" else None

    # 10 polls a second: half the gateway's 20 reads/s for one address.
    status = wait_for(
        finished, timeout=LOG_TIMEOUT, interval=0.1, what=f"task {task_id} to complete"
    )
    assert status["result"] == 42
    worker_id = status["handled_by"]
    worker_node = worker_id.split("/")[0]
    complete = wait_for_line(
        log_of(cluster, worker_node), "the worker's line", task_id=task_id, event="task complete"
    )
    assert (complete["process"], complete["node"]) == (worker_id, worker_node)


def test_without_a_request_id_the_gateway_makes_one_that_the_api_returns_and_logs(cluster):
    response = requests.get(f"{cluster.url}/whoami", timeout=5)
    assert response.status_code == 200
    request_id = response.headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", request_id), request_id
    node = response.json()["node"]
    wait_for_line(log_of(cluster, "nginx-access"), "the gateway's line", request_id=request_id)
    api = wait_for_line(log_of(cluster, node), "the API's request line", request_id=request_id)
    assert (api["event"], api["path"], api["status"]) == ("request", "/whoami", 200)


def test_every_log_line_is_one_json_object_with_time_level_event_node_and_process(cluster):
    for _ in range(4):
        assert requests.get(f"{cluster.url}/healthz", timeout=5).status_code == 200
    for node in cluster.node_ports:
        every_process = {"supervisor", "api", "scheduler", f"{node}/w1"}
        found = wait_for_processes(log_of(cluster, node), every_process)
        for line in found:
            assert COMMON_FIELDS <= set(line), line
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"]), line
            assert line["level"] in ("debug", "info", "warning", "error", "critical"), line
            assert line["node"] == node, line
            assert isinstance(line["event"], str) and line["event"], line
    wait_for(
        lambda: lines(log_of(cluster, "nginx-access")),
        timeout=LOG_TIMEOUT,
        what="the gateway's access log",
    )
    for line in lines(log_of(cluster, "nginx-access")):
        assert {"time", "level", "event", "request_id", "status"} <= set(line), line
