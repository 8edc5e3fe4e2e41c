"""The ha profile (``make up HA=1``) for real under podman: `valkey` as the
first primary, two replicas and three sentinels from the unchanged
docker-compose.yml and ops/valkey/start.sh, logging in with their own ACL
users, and the nodes finding the primary through the sentinels with the
replica ack. Then the primary's container is stopped hard (SIGKILL, and no
restart: a stop by the user): the sentinels promote a replica, and the
nodes keep accepting and finishing tasks without a restart.

The tests of this module share one stack and run in file order. Every
request goes to the gateway's port on the host's loopback; every load is a
handful of tasks with a deadline.
"""

from __future__ import annotations

import pytest
import requests

from tests.containers.conftest import DEV_SERVICES, HEALTHY_TIMEOUT
from tests.containers.engine import LOGS_DIR, Stack
from tests.support import wait_for

pytestmark = pytest.mark.timeout(900)

#: The ha profile's services beside the dev ones, one container each.
HA_SERVICES = {
    **DEV_SERVICES,
    "valkey-replica-1": 1,
    "valkey-replica-2": 1,
    "sentinel-1": 1,
    "sentinel-2": 1,
    "sentinel-3": 1,
}
#: What `make up HA=1` exports (Makefile: COMPOSE_HA), and short tasks: this
#: is about the failover, and 2 s of CPU per task (the default) takes longer
#: than the 30 s task time limit on a machine whose cores are shared ten
#: ways, which dead-letters tasks that did nothing wrong but wait for a core.
HA_ENV = {
    "VALKEY_SENTINELS": "sentinel-1:26379,sentinel-2:26379,sentinel-3:26379",
    "WIZARD_DURABLE_ACK": "replica",
    "WIZARD_WORK_SECONDS": "0.05",
}
#: Tasks in one burst.
BURST = 4
#: Longest wait for the sentinels to agree and promote, seconds: 5 s of
#: down-after-milliseconds, the vote, the promotion; on a busy machine the
#: first attempt can find no replica with fresh INFO (-failover-abort-no-
#: good-slave) and the next comes 2 x failover-timeout (60 s) later.
FAILOVER_TIMEOUT = 180.0
#: Longest wait for a burst of tasks to finish, seconds.
TASKS_TIMEOUT = 120.0
#: Answers meaning "not now, try again": the gateway without a node (502,
#: 504), or a node without a writable primary (503, a failover under way).
TRY_AGAIN = {502, 503, 504}


@pytest.fixture(scope="module")
def ha_stack(podman):
    with Stack(podman, profiles=("dev", "ha"), env=HA_ENV) as stack:
        wait_for(
            lambda: stack.healthy(HA_SERVICES),
            timeout=HEALTHY_TIMEOUT * 2,
            interval=1.0,
            what="every ha service to be healthy",
        )
        try:
            yield stack
        finally:
            stack.save_logs(LOGS_DIR / stack.project)


def primary_seen_by(stack: Stack, sentinel: str) -> str:
    """The primary's host name as ``sentinel`` says, or "" (none known)."""
    (container,) = stack.containers(sentinel)
    command = ("valkey-cli", "-p", "26379", "--raw", "sentinel", "get-master-addr-by-name")
    done = stack.podman.run("exec", container.id, *command, "wizard", check=False)
    return done.stdout.split()[0] if done.returncode == 0 and done.stdout.split() else ""


def replicas_of_primary(stack: Stack) -> int:
    """connected_slaves in the primary's INFO, asked through sentinel-1."""
    (container,) = stack.containers("sentinel-1")
    command = ("valkey-cli", "-p", "26379", "sentinel", "master", "wizard")
    lines = stack.podman.run("exec", container.id, *command).stdout.split()
    return int(lines[lines.index("num-slaves") + 1])


def submit_when_accepted(stack: Stack, a: int, b: int) -> dict | None:
    """POST /task through the gateway: the 202 body, or None on a try-again answer."""
    try:
        response = stack.post("/task", params={"a": a, "b": b, "operation": "add"})
    except requests.ConnectionError:
        # The gateway's port while nginx restarts its connection: try again.
        return None
    if response.status_code in TRY_AGAIN:
        return None
    assert response.status_code == 202, response.text
    return response.json()


def all_complete(stack: Stack, tasks: list[dict]) -> list[dict] | None:
    """The statuses of ``tasks`` if every one is complete, else None."""
    statuses = []
    for task in tasks:
        response = stack.get(f"/tasks/{task['task_id']}/status")
        if response.status_code in TRY_AGAIN:
            return None
        assert response.status_code == 200, response.text
        statuses.append(response.json())
    return statuses if all(s["status"] == "complete" for s in statuses) else None


def burst(stack: Stack, first: int) -> list[dict]:
    """BURST tasks accepted (each retried on a try-again answer), then
    waited for until every one is complete; their statuses."""
    tasks = [
        wait_for(
            lambda n=n: submit_when_accepted(stack, n, 1000),
            timeout=TASKS_TIMEOUT,
            interval=0.5,
            what="a 202",
        )
        for n in range(first, first + BURST)
    ]
    return wait_for(
        lambda: all_complete(stack, tasks), timeout=TASKS_TIMEOUT, interval=0.5, what="the burst"
    )


def test_the_sentinels_agree_on_valkey_with_both_replicas(ha_stack):
    for sentinel in ("sentinel-1", "sentinel-2", "sentinel-3"):
        assert primary_seen_by(ha_stack, sentinel) == "valkey", sentinel
    wait_for(
        lambda: replicas_of_primary(ha_stack) == 2, timeout=60, interval=1.0, what="two replicas"
    )
    statuses = burst(ha_stack, 0)
    assert [s["result"] for s in statuses] == [n + 1000 for n in range(BURST)]


def test_the_nodes_keep_accepting_after_the_primary_container_is_killed(ha_stack):
    (primary,) = ha_stack.containers("valkey")
    # --time 0: SIGKILL at once. A stop by the user: no restart policy
    # brings it back before the sentinels act.
    ha_stack.podman.run("stop", "--time", "0", primary.id)
    promoted = wait_for(
        lambda: (name := primary_seen_by(ha_stack, "sentinel-2")) != "valkey" and name,
        timeout=FAILOVER_TIMEOUT,
        interval=1.0,
        what="the sentinels to promote a replica",
    )
    assert promoted in ("valkey-replica-1", "valkey-replica-2")
    statuses = burst(ha_stack, 100)
    assert [s["result"] for s in statuses] == [n + 1000 for n in range(100, 100 + BURST)]
    # The old primary comes back as a replica of the new one: it asks the
    # sentinels at start (ops/valkey/start.sh).
    ha_stack.podman.run("start", primary.id)
    wait_for(
        lambda: replicas_of_primary(ha_stack) == 2,
        timeout=FAILOVER_TIMEOUT,
        interval=1.0,
        what="the old primary to follow the new one",
    )
    assert primary_seen_by(ha_stack, "sentinel-1") == promoted
