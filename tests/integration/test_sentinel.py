"""Valkey with replicas and Sentinel: a refused write is "away for a moment"
(never a 500), the replica ack waits for a replica, and a node's client
follows a failover to the new primary without a restart, its Lua scripts
loaded again there."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket
from pathlib import Path

import pytest
import valkey

from tests.support import call, wait_for
from wizard import queue, store
from wizard.api import make_app
from wizard.cluster import free_port
from wizard.config import DurableAck
from wizard.ha import ValkeyHA, ValkeyServer, in_sync
from wizard.worker import Worker


@contextlib.contextmanager
def primary_and_replica(var_dir: Path, replica_wrapper: list[str] | None = None):
    """A primary (min-replicas-to-write 1) and its replica, in sync, no
    sentinels; the replica's command prefixed by ``replica_wrapper`` (e.g.
    faketime). Yields (primary, replica); stops both by PID."""
    primary = ValkeyServer("p", host="127.0.0.1", port=free_port(), var_dir=var_dir)
    replica = ValkeyServer(
        "r",
        host="127.0.0.1",
        port=free_port(),
        var_dir=var_dir,
        replica_of=("127.0.0.1", primary.port),
        wrapper=replica_wrapper,
    )
    started = []
    try:
        for server in (primary, replica):
            server.start()
            started.append(server)
        wait_for(lambda: in_sync(replica), timeout=20, what="the replica in sync")
        yield primary, replica
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def pair(tmp_path):
    """See :func:`primary_and_replica`."""
    with primary_and_replica(tmp_path) as servers:
        yield servers


@pytest.fixture
def ha(tmp_path):
    """A primary, two replicas and three sentinels; stopped by PID."""
    trio = ValkeyHA(var_dir=tmp_path)
    trio.start()
    yield trio
    trio.stop()
    assert not any(part.alive() for part in trio.parts())


def as_node(settings, server: ValkeyServer, **changes):
    """``settings`` pointed at ``server`` as the nodes' user."""
    return dataclasses.replace(
        settings,
        valkey_url=server.node_url,
        valkey_password_file=str(server.node_password_file),
        **changes,
    )


def admin(server: ValkeyServer) -> valkey.Valkey:
    return valkey.Valkey.from_url(server.url, decode_responses=True)


def test_a_write_sent_to_a_replica_is_refused_as_unavailable_not_as_a_bug(settings, pair):
    _, replica = pair
    client = store.connect(as_node(settings, replica))

    with pytest.raises(store.PrimaryUnavailable, match="READONLY|read only"):
        queue.submit(client, "add", 1, 2, accepted_by="node-1")

    response = call(
        make_app(as_node(settings, replica)),
        "POST",
        "/task",
        query={"a": 1, "b": 2},
    )
    assert response.status == 503
    assert "Retry-After" in response.headers


def test_a_primary_that_lost_its_replicas_refuses_writes_with_a_503(settings, pair):
    primary, replica = pair
    replica.stop(signal.SIGKILL)
    probe = admin(primary)
    wait_for(lambda: probe.info("replication")["min_slaves_good_slaves"] == 0, timeout=10)
    app = make_app(as_node(settings, primary))

    response = call(app, "POST", "/task", query={"a": 1, "b": 2})

    assert response.status == 503
    assert "NOREPLICAS" in response.json()["detail"]
    assert probe.llen(store.TASK_QUEUE) == 0, "a refused transaction stored nothing"


def calls(server: ValkeyServer, command: str) -> int:
    """How many times ``server`` ran ``command`` (INFO commandstats)."""
    stats = admin(server).info("commandstats")
    return stats.get(f"cmdstat_{command}", {}).get("calls", 0)


def test_the_replica_ack_answers_202_once_a_replica_and_the_disk_have_the_task(settings, pair):
    primary, replica = pair
    app = make_app(as_node(settings, primary, durable_ack=DurableAck.REPLICA))
    waits, waitaofs = calls(primary, "wait"), calls(primary, "waitaof")

    response = call(app, "POST", "/task", query={"a": 1, "b": 2})

    assert response.status == 202
    on_replica = admin(replica)
    assert on_replica.hget(store.task_key(response.json()["task_id"]), "status") == "pending"
    # Before the 202: WAIT 1 for the replica, WAITAOF 1 0 for the primary's disk.
    assert (calls(primary, "wait"), calls(primary, "waitaof")) == (waits + 1, waitaofs + 1)


def test_the_aof_ack_waits_for_the_disk_but_not_for_a_replica(settings, pair):
    primary, _ = pair
    app = make_app(as_node(settings, primary, durable_ack=DurableAck.AOF))
    waits, waitaofs = calls(primary, "wait"), calls(primary, "waitaof")

    assert call(app, "POST", "/task", query={"a": 1, "b": 2}).status == 202

    assert (calls(primary, "wait"), calls(primary, "waitaof")) == (waits, waitaofs + 1)


def test_the_replica_ack_refuses_a_202_when_no_replica_confirms(settings):
    # The session's Valkey has no replica: WAIT 1 times out after 1 s.
    client = store.connect(settings, blocking_seconds=2)
    with pytest.raises(queue.NotDurable, match="no replica"):
        queue.submit(client, "add", 1, 2, accepted_by="node-1", durable=DurableAck.REPLICA)


def test_a_node_follows_a_failover_without_restarting_and_loses_no_replica_acked_task(settings, ha):
    node = as_node(
        settings,
        ha.servers[0],
        valkey_sentinels=tuple(ha.sentinel_addresses),
        durable_ack=DurableAck.REPLICA,
        lease_seconds=2,
    )
    app = make_app(node)
    worker = Worker(node, "node-1/w1")
    before = [
        call(app, "POST", "/task", query={"a": n, "b": 1}).json()["task_id"] for n in range(5)
    ]
    assert worker.work_once() == "complete", "scripts loaded on the first primary"
    old = ha.primary()
    assert call(app, "GET", "/cluster").json()["valkey"]["primary"] == old.address

    old.stop(signal.SIGKILL)
    new = ha.wait_failover(old)

    # The same app and worker, never restarted: the first calls may meet the
    # dead primary's sockets (503); then they land on the promoted replica.
    accepted = wait_for(
        lambda: call(app, "POST", "/task", query={"a": 100, "b": 1}).status == 202,
        timeout=20,
        interval=0.1,
        what="a 202 from the new primary",
    )
    assert accepted
    assert call(app, "GET", "/cluster").json()["valkey"]["primary"] == new.address
    # Scripts are not replicated: the promoted replica has none of them yet.
    step_sha = worker.scripts.step.sha
    assert admin(new).script_exists(step_sha) == [False]
    done = []

    def drained() -> bool:
        try:
            outcome = worker.work_once()
        except valkey.ConnectionError:
            # Still on a socket to the dead primary: the next call reconnects.
            return False
        if outcome is not None:
            done.append(outcome)
        return outcome is None and len(done) >= 5

    # NOSCRIPT on the new primary: the worker's scripts load themselves again.
    wait_for(drained, timeout=30, interval=0.05, what="the worker drains the new primary")
    on_new = admin(new)
    assert on_new.script_exists(step_sha) == [True], "loaded again on the new primary"
    statuses = [on_new.hget(store.task_key(t), "status") for t in before]
    assert statuses == ["complete"] * 5, "every task acked by a replica survived the failover"


def test_a_connection_to_valkey_has_tcp_keepalive_and_a_limit_on_unacknowledged_writes(settings):
    client = store.connect(settings)
    client.ping()
    connection = client.connection_pool.get_connection("PING")
    try:
        sock = connection._sock
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == store.KEEPALIVE_IDLE
        timeout_ms = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT)
        assert timeout_ms == store.UNACKED_TIMEOUT_MS
    finally:
        client.connection_pool.release(connection)
        client.close()


def test_one_connection_finding_the_primary_dead_closes_the_idle_ones_of_its_pool(settings, ha):
    node = as_node(settings, ha.servers[0], valkey_sentinels=tuple(ha.sentinel_addresses))
    client = store.connect(node)
    pool = client.connection_pool
    # Three connections to the primary, then idle in the pool.
    taken = [pool.get_connection("PING") for _ in range(3)]
    for connection in taken:
        pool.release(connection)
    primary = ha.primary()
    # Frozen: its kernel still takes the bytes, nothing answers, no reset
    # comes (as from a killed container): the command waits out its socket
    # timeout, once.
    os.kill(primary.pid, signal.SIGSTOP)
    try:
        with pytest.raises(valkey.TimeoutError):
            client.ping()
        # The other two are not left to wait out theirs, one after another.
        assert [connection._sock for connection in taken] == [None] * 3
    finally:
        os.kill(primary.pid, signal.SIGCONT)
    # Frozen past DOWN_AFTER_MS on a loaded machine, it may have been failed
    # over meanwhile: the client reaches whichever server is primary now.
    wait_for(lambda: pings(client), timeout=30, interval=0.1, what="a primary again")
    client.close()


def pings(client: valkey.Valkey) -> bool:
    """True if ``client`` reaches a primary now."""
    try:
        return client.ping()
    except valkey.ConnectionError:
        # No primary named yet (MasterNotFoundError), or its socket closing.
        return False


def test_a_lease_crosses_a_failover_as_written_and_its_stale_holder_is_fenced(settings, ha):
    node = as_node(settings, ha.servers[0], valkey_sentinels=tuple(ha.sentinel_addresses))
    client = store.connect(node)
    scripts = queue.Scripts(client)
    queue.submit(client, "add", 1, 2, accepted_by="node-1", durable=DurableAck.REPLICA)
    stale = queue.take(client, scripts, "node-1/w1", lease_ms=60_000, block_seconds=0.1)
    assert stale is not None
    # The claim (lease_expires from the old primary's clock) on both replicas.
    assert client.execute_command("WAIT", 2, 5000) == 2
    old = ha.primary()
    written = admin(old).hgetall(store.task_key(stale.task_id))

    old.stop(signal.SIGKILL)
    new = ha.wait_failover(old)

    # Replicas apply the script's effects, never re-run it: the expiry the
    # old primary computed arrives unchanged; the new one's clock judges it.
    on_new = admin(new)
    assert on_new.hgetall(store.task_key(stale.task_id)) == written
    assert queue.find_lost(on_new, "node-1/w1") == [], "a live lease is not handed back"
    # The reaper hands it back anyway (as if it had expired); attempt 2 runs.
    new_scripts = queue.Scripts(on_new)
    lost = queue.HandBack(stale.task_id, stale.worker_id, stale.attempt, "worker_lost", "lost")
    policy = queue.RetryPolicy(max_attempts=3, base_backoff_seconds=0, result_ttl_seconds=60)
    assert queue.retry(new_scripts, lost, policy, node_id="node-1") is queue.RetryOutcome.RETRY
    running = queue.take(on_new, new_scripts, "node-2/w1", lease_ms=60_000, block_seconds=1)
    assert running.attempt == 2

    def finish_as(claim, result):
        try:
            return queue.finish(
                client, scripts, claim, node_id="node-1", result_ttl=60, result=result
            )
        except valkey.ConnectionError:
            # The stale holder's socket to the dead primary: it reconnects.
            return None

    # The holder of attempt 1, through the same client, now on the new primary.
    refused = wait_for(lambda: finish_as(stale, 99) is False, timeout=20, what="a fenced write")
    assert refused
    assert on_new.hget(store.stats_key("node-1"), "fenced_writes") == "1"
    assert finish_as(running, 3) is True
    assert on_new.hget(store.task_key(stale.task_id), "result") == "3"
