"""The dev profile (``make up``) for real: the unchanged docker-compose.yml and
Dockerfile under podman, on stand-in images (Debian + PyPI, not the upstream
alpine images), with Docker's DNS at 127.0.0.11 forwarded to podman's and the
start order by health not exercised (podman 4.3 ignores it).

The tests of this module share one stack and run in file order: the last
one takes it down. Every request goes to the gateway's port on the host's
loopback; the only container addresses used belong to the stack's own
networks; every load is a handful of tasks with a deadline.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.containers.conftest import DEV_SERVICES, HEALTHY_TIMEOUT
from tests.containers.engine import (
    HTTP_TIMEOUT,
    LOGS_DIR,
    PROJECT_LABEL,
    RATE_LIMITED_RETRIES,
    Container,
    Stack,
)
from tests.support import wait_for

pytestmark = pytest.mark.timeout(600)

#: Tasks in one burst: two rounds of the three replicas.
BURST = 6
#: Longest wait for a burst of tasks to finish, seconds (2 s of simulated work
#: each, three workers, plus a 10 s lease if a node dies).
TASKS_TIMEOUT = 90.0
#: Seconds between two status polls through the gateway: 10 a second, half
#: of the gateway's 20 reads/s per address (every poll comes from 127.0.0.1).
POLL_INTERVAL = 0.1
#: Longest wait for nginx to follow a change of replicas, seconds (it
#: resolves `app` again every second: ops/nginx/compose-upstream.conf).
RESOLVE_TIMEOUT = 60.0
#: The compose file's stop_grace_period of the app, seconds.
APP_STOP_GRACE = 30


def submit(stack: Stack, a: int, b: int) -> dict:
    """POST /task?a=&b= (add) through the gateway; the 202 body."""
    response = stack.post("/task", params={"a": a, "b": b, "operation": "add"})
    assert response.status_code == 202, response.text
    return response.json()


def status(stack: Stack, task_id: str) -> dict:
    """GET /tasks/<id>/status through the gateway."""
    response = stack.get(f"/tasks/{task_id}/status")
    assert response.status_code == 200, response.text
    return response.json()


def node_of(worker: str) -> str:
    """The node of a worker id (``<node>/w<n>``)."""
    return worker.split("/")[0]


#: Answers of the gateway while a replica is down or has just changed
#: address (nginx learns new addresses every second): try again, not a result.
GATEWAY_BUSY = {502, 504}


def status_if_answered(stack: Stack, task_id: str) -> dict | None:
    """GET /tasks/<id>/status, or None if the gateway answered 502/504."""
    response = stack.get(f"/tasks/{task_id}/status")
    if response.status_code in GATEWAY_BUSY:
        return None
    assert response.status_code == 200, response.text
    return response.json()


def all_complete(stack: Stack, tasks: list[dict]) -> list[dict] | None:
    """The statuses of ``tasks`` if every one is complete, else None."""
    statuses = [status_if_answered(stack, task["task_id"]) for task in tasks]
    if all(s and s["status"] == "complete" for s in statuses):
        return statuses
    return None


def nodes_seen(stack: Stack, requests: int) -> set[str]:
    """The nodes that answered ``requests`` GET /whoami through the gateway,
    each of which must succeed."""
    seen = set()
    for _ in range(requests):
        response = stack.get("/whoami")
        assert response.status_code == 200, response.text
        seen.add(response.json()["node"])
    return seen


def answering_nodes(stack: Stack, requests: int) -> set[str] | None:
    """Like nodes_seen, but None if any of the requests was not answered 200."""
    seen = set()
    for _ in range(requests):
        response = stack.get("/whoami")
        if response.status_code != 200:
            return None
        seen.add(response.json()["node"])
    return seen


def wait_until_nginx_serves_every_replica(stack: Stack) -> None:
    """Wait until every running replica answers through the gateway: after
    a restart a replica may have a new address, which nginx learns when it
    next resolves `app` (every second); until then requests can get a 502."""
    wait_for(
        lambda: answering_nodes(stack, 9) == hostnames(stack),
        timeout=RESOLVE_TIMEOUT,
        interval=1.0,
        what="nginx to reach every running replica",
    )


def restore_three_replicas(stack: Stack) -> None:
    """Start any stopped app replica and wait until all three are healthy and
    reached through nginx (each stateful test starts from there)."""
    for app in stack.containers("app"):
        if app.state != "running":
            stack.podman.run("start", app.id)
    wait_for(
        lambda: stack.healthy({"app": 3}), timeout=HEALTHY_TIMEOUT, interval=1.0, what="3 apps"
    )
    wait_until_nginx_serves_every_replica(stack)


def hostnames(stack: Stack) -> set[str]:
    """Hostnames (node ids) of the running app containers."""
    return {c.hostname for c in stack.containers("app") if c.state == "running"}


def started(stack: Stack, container: Container) -> tuple[str, int]:
    """When a container last started and how often it restarted."""
    state = stack.podman.inspect(container.id)["State"]
    return state["StartedAt"], state.get("RestartCount", 0)


def test_every_service_becomes_healthy_though_podman_ignores_start_order(dev_stack):
    running = {}
    for container in dev_stack.containers():
        assert container.state == "running", container
        assert dev_stack.health(container) == "healthy", container
        running[container.service] = running.get(container.service, 0) + 1
    assert running == DEV_SERVICES


def test_the_gateway_is_published_on_loopback_only_and_answers_there(dev_stack):
    (gateway,) = dev_stack.containers("gateway")
    ports = dev_stack.podman.inspect(gateway.id)["NetworkSettings"]["Ports"]
    assert ports == {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(dev_stack.gateway_port)}]}
    response = dev_stack.get("/healthz")
    assert response.status_code == 200
    assert response.headers["X-Request-ID"]


def test_whoami_rotates_over_the_three_replicas(dev_stack):
    replicas = hostnames(dev_stack)
    assert len(replicas) == 3
    assert nodes_seen(dev_stack, 3 * len(replicas)) == replicas


def node_url(stack: Stack, node: str) -> str:
    """The API of the app container named ``node``, at its address on the
    stack's own frontend network (reachable from the host through the bridge)."""
    (container,) = [c for c in stack.containers("app") if c.hostname == node]
    networks = stack.podman.inspect(container.id)["NetworkSettings"]["Networks"]
    return f"http://{networks[stack.network('frontend')]['IPAddress']}:8000"


def test_a_task_accepted_by_one_replica_is_handled_by_another_and_read_from_a_third(dev_stack):
    first = submit(dev_stack, 1, 2)
    running = wait_for(
        lambda: (s := status(dev_stack, first["task_id"]))["status"] == "running" and s,
        timeout=TASKS_TIMEOUT,
        interval=POLL_INTERVAL,
        what="the first task to be running",
    )
    # That node's only worker is busy for 2 s. A task its API accepts now can
    # only be taken from the shared queue by another node's worker. (Through
    # the gateway, round robin and the queue's order of waiting workers line
    # up, and each node ends up running what it accepted.)
    busy = node_of(running["handled_by"])
    answer = requests.post(
        node_url(dev_stack, busy) + "/task", params={"a": 20, "b": 22}, timeout=HTTP_TIMEOUT
    )
    assert answer.status_code == 202, answer.text
    second = answer.json()
    assert second["accepted_by"] == busy
    done = wait_for(
        lambda: all_complete(dev_stack, [first, second]),
        timeout=TASKS_TIMEOUT,
        interval=0.5,
        what="both tasks to complete",
    )
    assert done[0]["finished_at"] > done[1]["created_at"], "the first task ended too soon"
    assert done[1]["result"] == 42
    handler = node_of(done[1]["handled_by"])
    assert handler != busy
    # Round robin: within a few reads through the gateway, a third replica
    # answers (the health pump's requests share the rotation).
    readers = set()
    for _ in range(9):
        readers.add(status(dev_stack, second["task_id"])["checked_by"])
        if readers - {busy, handler}:
            break
    assert readers - {busy, handler}, f"read only from {readers}"
    assert readers <= hostnames(dev_stack)


def probe_valkey(stack: Stack, network: str, address: str) -> dict:
    """From a throwaway container on ``network`` (a network of this stack),
    resolve the name ``valkey`` and send PING to ``address``:6379, 2 s at most
    each. Returns {"resolved": bool, "reply": str or the error}."""
    script = (
        "import json, socket\n"
        "out = {}\n"
        "try:\n"
        "    socket.getaddrinfo('valkey', 6379); out['resolved'] = True\n"
        "except OSError:\n"
        "    out['resolved'] = False\n"
        "try:\n"
        f"    s = socket.create_connection(('{address}', 6379), timeout=2)\n"
        "    s.sendall(b'PING\\r\\n'); out['reply'] = s.recv(64).decode()\n"
        "except OSError as error:\n"
        "    out['reply'] = type(error).__name__\n"
        "print(json.dumps(out))\n"
    )
    (app,) = stack.containers("app")[:1]
    image = stack.podman.inspect(app.id)["ImageName"]
    result = stack.podman.run(
        "run", "--rm", "--network", network, "--label", f"{PROJECT_LABEL}={stack.project}",
        image, "python", "-c", script,
        timeout=60,
    )  # fmt: skip
    return json.loads(result.stdout)


def test_valkey_publishes_no_port_and_is_unreachable_from_the_gateways_network(dev_stack):
    (valkey,) = dev_stack.containers("valkey")
    (gateway,) = dev_stack.containers("gateway")
    valkey_info = dev_stack.podman.inspect(valkey.id)
    assert dev_stack.podman.run("port", valkey.id).stdout == ""
    assert not any(valkey_info["HostConfig"]["PortBindings"].values())
    valkey_networks = valkey_info["NetworkSettings"]["Networks"]
    assert list(valkey_networks) == [dev_stack.network("backend")]
    address = valkey_networks[dev_stack.network("backend")]["IPAddress"]
    # The probe can reach Valkey where it should (the app's backend network):
    # PONG, or NOAUTH where Valkey wants a password; a reply either way...
    reached = probe_valkey(dev_stack, dev_stack.network("backend"), address)
    assert reached["resolved"] is True, reached
    assert reached["reply"].startswith(("+PONG", "-NOAUTH")), reached
    # ...and not from any network the gateway is on, by name or by address.
    gateway_networks = dev_stack.podman.inspect(gateway.id)["NetworkSettings"]["Networks"]
    assert list(gateway_networks) == [dev_stack.network("frontend")]
    for network in gateway_networks:
        seen = probe_valkey(dev_stack, network, address)
        assert seen["resolved"] is False, seen
        assert not seen["reply"].startswith(("+", "-")), seen


class ReadsDuring:
    """A bounded loop of ``GET /whoami`` through the gateway, one every
    POLL_INTERVAL seconds (at most MAX_READS), for as long as the ``with``
    block lasts: what a client sees while replicas change."""

    MAX_READS = 1200

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.statuses: list[int] = []
        self.retry_after_of_502s: list[str] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.run, name="reads-during")

    def run(self) -> None:
        while not self.done.is_set() and len(self.statuses) < self.MAX_READS:
            try:
                answer = self.stack.get("/whoami")
            except requests.RequestException:
                # No answer at all (refused, timed out): recorded as status 0,
                # which the test's assertion on the statuses refuses.
                self.statuses.append(0)
                self.done.wait(POLL_INTERVAL)
                continue
            self.statuses.append(answer.status_code)
            if answer.status_code == 502:
                self.retry_after_of_502s.append(answer.headers.get("Retry-After", "0"))
            self.done.wait(POLL_INTERVAL)

    def save(self, path: Path) -> None:
        """Write the counts per status (kept with the container logs)."""
        counts = {str(code): self.statuses.count(code) for code in sorted(set(self.statuses))}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"reads": len(self.statuses), "statuses": counts}) + "\n")

    def __enter__(self) -> ReadsDuring:
        self.thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.done.set()
        self.thread.join(timeout=HTTP_TIMEOUT * RATE_LIMITED_RETRIES + 10)


def scale_app(stack: Stack, replicas: int) -> None:
    """``up -d --scale app=N`` as the compose file's comment says. Going down,
    podman-compose leaves the extra replicas running, so they are stopped
    (with the service's stop_grace_period, which podman-compose does not give
    the containers themselves) and removed here, the highest numbers first,
    as Docker does."""
    stack.compose("up", "-d", "--no-recreate", "--scale", f"app={replicas}")
    for extra in stack.containers("app")[replicas:]:
        stack.podman.run(
            "stop", "--time", str(APP_STOP_GRACE), extra.id, timeout=APP_STOP_GRACE + 30
        )
        stack.podman.run("rm", extra.id)


def test_scaling_the_app_to_five_is_picked_up_by_nginx_without_a_restart_and_back(dev_stack):
    (gateway,) = dev_stack.containers("gateway")
    before = started(dev_stack, gateway)

    scale_app(dev_stack, 5)
    wait_for(
        lambda: dev_stack.healthy({"app": 5}), timeout=HEALTHY_TIMEOUT, interval=1.0, what="5 apps"
    )
    five = hostnames(dev_stack)
    assert len(five) == 5
    wait_for(
        lambda: nodes_seen(dev_stack, 10) == five,
        timeout=RESOLVE_TIMEOUT,
        interval=1.0,
        what="nginx to spread requests over five replicas",
    )

    with ReadsDuring(dev_stack) as reads:
        scale_app(dev_stack, 3)
        three = hostnames(dev_stack)
        assert len(three) == 3 and three < five
        # Until nginx resolves `app` again (at most 1 s), it still tries the
        # removed replicas' addresses (a 1 s connect timeout each), and a request
        # that meets both while the upstream's addresses change is answered 502
        # ("no live upstreams"): nginx gives up on a request whose upstream
        # changed under it. That window is what this waits out, not an error.
        wait_for(
            lambda: answering_nodes(dev_stack, 9) == three,
            timeout=RESOLVE_TIMEOUT,
            interval=1.0,
            what="nginx to drop the two removed replicas",
        )
    # Reads kept going during the change: each reached a live replica, or
    # met nginx's own gap (a 502 that says to retry), never a hang or a 504.
    reads.save(LOGS_DIR / f"{dev_stack.project}-scale-down-reads.json")
    assert reads.statuses and set(reads.statuses) <= {200, 502}, reads.statuses
    assert 200 in reads.statuses
    assert all(int(retry) >= 1 for retry in reads.retry_after_of_502s)
    assert dev_stack.containers("gateway") == [gateway]
    assert started(dev_stack, gateway) == before


def test_killing_one_app_container_loses_no_accepted_task(dev_stack):
    restore_three_replicas(dev_stack)
    tasks = [submit(dev_stack, n, 2000) for n in range(BURST)]
    running = wait_for(
        lambda: next(
            (
                s
                for t in tasks
                if (s := status_if_answered(dev_stack, t["task_id"])) and s["status"] == "running"
            ),
            None,
        ),
        timeout=TASKS_TIMEOUT,
        interval=0.1,
        what="a task to be running",
    )
    victim = next(
        c for c in dev_stack.containers("app") if c.hostname == node_of(running["handled_by"])
    )
    dev_stack.podman.run("kill", "--signal", "KILL", victim.id)

    statuses = wait_for(
        lambda: all_complete(dev_stack, tasks),
        timeout=TASKS_TIMEOUT,
        interval=0.5,
        what="every accepted task to complete after the kill",
    )
    assert [s["result"] for s in statuses] == [n + 2000 for n in range(BURST)]
    interrupted = next(s for s in statuses if s["task_id"] == running["task_id"])
    assert interrupted["attempts"] >= 2, interrupted


def test_compose_stop_lets_a_running_task_finish_within_the_grace_period(dev_stack):
    restore_three_replicas(dev_stack)
    # podman-compose passes stop_grace_period to `podman stop -t` at stop
    # time (the containers themselves keep podman's 10 s default).
    apps = dev_stack.containers("app")
    task = submit(dev_stack, 7, 35)
    running = wait_for(
        lambda: (s := status(dev_stack, task["task_id"]))["status"] == "running" and s,
        timeout=TASKS_TIMEOUT,
        interval=POLL_INTERVAL,
        what="the task to be running",
    )

    stop_began = time.time()
    dev_stack.compose("stop", "app", timeout=APP_STOP_GRACE + 60)
    for app in apps:
        state = dev_stack.podman.inspect(app.id)["State"]
        # 0: the node finished and exited on SIGTERM; 137 would be SIGKILL
        # after the grace period.
        assert (state["Status"], state["ExitCode"]) == ("exited", 0), app

    dev_stack.compose("start", "app")
    restore_three_replicas(dev_stack)
    finished = status(dev_stack, task["task_id"])
    assert finished["status"] == "complete", finished
    assert finished["result"] == 42
    assert finished["attempts"] == 1
    assert finished["handled_by"] == running["handled_by"]
    # Finished after SIGTERM reached its node, not before the stop began
    # (seconds since the epoch; the containers share the host's clock).
    assert finished["finished_at"] > stop_began, (finished, stop_began)


def test_down_with_volumes_leaves_nothing(dev_stack):
    before = dev_stack.leftovers()
    assert before["containers"] and before["volumes"] and len(before["networks"]) == 2, before
    dev_stack.compose("down", "-v", timeout=APP_STOP_GRACE + 60)
    assert dev_stack.leftovers() == {"containers": [], "networks": [], "volumes": []}
    pump = dev_stack.pump
    dev_stack.stop_pump()
    assert pump.poll() is not None
