"""Leases across a failover to a server whose clock is ahead: what
docs/deployment.md ("Leases, fencing and clocks across a failover") says,
run for real. A lease's expiry is written from the primary's clock (TIME in
the claim script) and judged by the clock of whichever server is primary
when the reaper looks. Here the replica runs 30 s ahead (libfaketime: `make
faketime`; the real valkey-server, its clock shifted), and is promoted:

- the lease arrives unchanged (replicas apply the script's effects), but
  the new primary's clock says it ran out 30 s early, so the task is handed
  to another worker while its first holder is still at work;
- the first holder's late result is then refused by the fence (its attempt
  number is no longer the current one): the outcome is written once.

A clock difference costs timing (one task computed twice), never
correctness. Nothing waits a guessed delay.
"""

from __future__ import annotations

import shutil
import signal

import pytest

from tests.integration.test_sentinel import admin, as_node, primary_and_replica
from wizard import queue, store
from wizard.ha import ValkeyServer

#: How far ahead the replica's clock runs, seconds.
AHEAD_SECONDS = 30

#: The lease the first holder takes, milliseconds: far longer than the test
#: takes in real time, far shorter than the clock difference.
LEASE_MS = 10_000


@pytest.fixture
def skewed_pair(tmp_path):
    """A primary on this machine's clock and its replica AHEAD_SECONDS ahead."""
    faketime = shutil.which("faketime")
    assert faketime, "faketime is missing: run `make faketime` (Debian's faketime)"
    # -m: the multi-threaded library (Valkey runs background threads);
    # only the wall clock moves (TIME), not the monotonic one.
    wrapper = [faketime, "-m", "--exclude-monotonic", "-f", f"+{AHEAD_SECONDS}s"]
    with primary_and_replica(tmp_path, replica_wrapper=wrapper) as servers:
        yield servers


def server_seconds(server: ValkeyServer) -> int:
    seconds, _ = admin(server).time()
    return seconds


def test_a_promoted_replica_with_a_clock_ahead_hands_a_lease_out_early_and_the_fence_holds(
    settings, skewed_pair
):
    primary, replica = skewed_pair
    assert server_seconds(replica) - server_seconds(primary) >= AHEAD_SECONDS - 2
    client = store.connect(as_node(settings, primary))
    scripts = queue.Scripts(client)
    queue.submit(client, "add", 1, 2, accepted_by="node-1")
    first = queue.take(client, scripts, "node-1/w1", lease_ms=LEASE_MS, block_seconds=0.1)
    assert first is not None
    assert queue.find_lost(client, "node-1/w1") == [], "by the old primary's clock: held"
    assert client.execute_command("WAIT", 1, 5000) == 1
    written = admin(primary).hgetall(store.task_key(first.task_id))

    # Failover by hand: the old primary dies, the replica takes over.
    primary.stop(signal.SIGKILL)
    new = admin(replica)
    new.execute_command("REPLICAOF", "NO", "ONE")
    new.config_set("min-replicas-to-write", 0)

    assert new.hgetall(store.task_key(first.task_id)) == written, "the expiry as written"
    (lost,) = queue.find_lost(new, "node-1/w1")
    assert lost.task_id == first.task_id, "by the new primary's clock the lease ran out"
    new_scripts = queue.Scripts(new)
    handed_back = queue.HandBack(first.task_id, first.worker_id, first.attempt, "worker_lost", "")
    policy = queue.RetryPolicy(max_attempts=3, base_backoff_seconds=0, result_ttl_seconds=60)
    assert (
        queue.retry(new_scripts, handed_back, policy, node_id="node-2") is queue.RetryOutcome.RETRY
    )
    second = queue.take(new, new_scripts, "node-2/w1", lease_ms=LEASE_MS, block_seconds=1)
    assert second.attempt == 2

    # The first holder, still at work, sends its result: refused, counted.
    assert (
        queue.finish(new, new_scripts, first, node_id="node-1", result_ttl=60, result=99) is False
    )
    assert new.hget(store.stats_key("node-1"), "fenced_writes") == "1"
    assert queue.finish(new, new_scripts, second, node_id="node-2", result_ttl=60, result=3) is True
    task = new.hgetall(store.task_key(first.task_id))
    assert (task["status"], task["result"], task["attempts"]) == ("complete", "3", "2")
