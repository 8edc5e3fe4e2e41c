"""The cluster over a real (if virtual) network: a node host cut off mid
burst, a slow link to Valkey, and the Valkey primary partitioned away.

Each scenario is bounded in tasks and time, counts what happened by code,
and records it in RESULTS (docs/netlab.md shows the tables).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
import valkey

from tests.chaos.conftest import CHAOS_TEST_SECONDS
from tests.netlab.conftest import RESULTS
from tests.support import wait_for
from wizard import store

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(CHAOS_TEST_SECONDS)]


#: Simulated work per task in the cut-off scenario, CPU-seconds: long enough
#: that the workers fall behind the burst (node-2 always holds a task while
#: the queue has some), short enough that 300 tasks (9 CPU-seconds) end in
#: the test's time on a loaded 2-core machine (100 ms, 30 CPU-seconds, did
#: not at a load average of 45).
CUT_WORK_SECONDS = 0.03


def test_a_node_host_cut_off_mid_burst_loses_nothing_and_writes_no_outcome_twice(start_lab):
    chaos = start_lab(nodes=3, workers=1, WIZARD_WORK_SECONDS=CUT_WORK_SECONDS)
    net = chaos.cluster.network
    loader = threading.Thread(target=chaos.submit_many, args=(300,), kwargs={"threads": 4})
    loader.start()
    try:
        held_key = store.processing_key("node-2/w1")
        wait_for(lambda: len(chaos.accepted) >= 100, timeout=60, what="the burst is under way")
        wait_for(lambda: chaos.valkey.llen(held_key), timeout=10, what="node-2 holds a task")
        net.cut("node-2")
        cut_at = time.monotonic()
        cut_wall = time.time()
        # Read after the cut: node-2 can no longer change its list.
        held = chaos.valkey.lrange(held_key, 0, -1)
        assert held, "node-2 finished its task in the instant before the cut; run again"

        def done_elsewhere():
            tasks = [chaos.valkey.hgetall(store.task_key(t)) for t in held]
            finished = [t for t in tasks if t.get("status") == "complete"]
            return len(finished) == len(held) and tasks

        redone = wait_for(done_elsewhere, timeout=30, what="node-2's tasks done elsewhere")
        loader.join()
    finally:
        net.heal("node-2")
    healed_at = time.monotonic()
    healed_wall = time.time()

    # node-2's worker sent its result while cut off; TCP delivers it late.
    wait_for(lambda: chaos.stat("fenced_writes") >= 1, timeout=30, what="the late write refused")
    tasks = chaos.wait_all_finished()
    # Created (by a node, in Valkey) after the cable was pulled, not after
    # the client read its 202: a 202 node-2 sent just before is not routing.
    during_cut = {i for i, t in tasks.items() if cut_wall < float(t["created_at"]) < healed_wall}

    wrong = [i for i, t in tasks.items() if t.get("status") != "complete"]
    assert wrong == [], f"not complete: {[tasks[i] for i in wrong[:3]]}"
    assert all(int(tasks[i]["result"]) == chaos.accepted[i] for i in tasks)
    assert all(t["handled_by"] != "node-2/w1" and int(t["attempts"]) >= 2 for t in redone)
    assert during_cut, "the gateway kept accepting while node-2 was cut off"
    assert all(tasks[i]["accepted_by"] != "node-2" for i in during_cut)

    # Every task in Valkey, also those whose 202 never reached the client
    # (in flight to node-2 at the cut; TCP may deliver node-2's MULTI/EXEC
    # seconds after the heal, creating the task late): once all are done,
    # each has exactly one written outcome (the finish script counts the
    # writes it accepts). A task written twice would never let this settle.
    def settled():
        stored = stored_tasks(chaos)
        done = all(t.get("status") == "complete" for t in stored.values())
        return done and chaos.stat("complete:add") == len(stored) and stored

    stored = wait_for(settled, timeout=30, interval=0.5, what="one written outcome per task")
    written = chaos.stat("complete:add")
    logged = chaos.completions_logged()
    assert max(logged.values()) == 1
    RESULTS["cut_node_host"] = {
        "tasks_submitted": 300,
        "accepted": len(chaos.accepted),
        "refused_or_timed_out": chaos.refused,
        "accepted_while_cut": len(during_cut),
        "accepted_by_cut_node_while_cut": 0,
        "held_by_cut_node": len(held),
        "redone_elsewhere": len(redone),
        "late_writes_refused": chaos.stat("fenced_writes"),
        "complete": len(tasks) - len(wrong),
        "lost": len(wrong),
        "stored_without_a_202": len(stored) - len(tasks),
        "outcomes_written_twice": written - len(stored),
        "cut_seconds": round(healed_at - cut_at, 1),
    }


def stored_tasks(chaos) -> dict[str, dict]:
    """Every task hash in Valkey, by id (SCAN: the lab's Valkey is small)."""
    keys = list(chaos.valkey.scan_iter(match=store.task_key("*"), count=1000))
    return {key.removeprefix(store.TASK_PREFIX): chaos.valkey.hgetall(key) for key in keys}


#: Round-trip delay added to Valkey in the slow-link scenario, milliseconds.
VALKEY_DELAY_MS = 20

#: POSTs sent one after another, to see one request's own latency.
SEQUENTIAL = 30


@pytest.mark.parametrize("batch", [1, 32], ids=["batch1", "batch32"])
def test_twenty_ms_to_valkey_slows_every_round_trip_and_loses_nothing(start_lab, batch):
    # With WIZARD_BATCH=32 a worker takes and records up to 32 tasks per
    # round trip: the same delay is paid once per batch, not once per task.
    chaos = start_lab(nodes=3, workers=1, slow_valkey=True, WIZARD_BATCH=batch)
    cluster = chaos.cluster
    before = measure_burst(chaos, tasks=300)
    cluster.set_valkey_delay(VALKEY_DELAY_MS)
    valkey_test = requests.get(cluster.url + "/valkey_test", timeout=10).json()
    after = measure_burst(chaos, tasks=300)

    # The relay holds each reply back for the delay: a lower bound by
    # construction, not a speed goal.
    assert valkey_test["round_trip_ms"] >= VALKEY_DELAY_MS
    for phase in (before, after):
        assert phase["complete"] == phase["accepted"] == 300 + SEQUENTIAL, phase
    RESULTS[f"valkey_delay_batch{batch}"] = {
        "delay_ms": VALKEY_DELAY_MS,
        "nodes": 3,
        "workers_per_node": 1,
        "batch": batch,
        "before": before,
        "after": after,
        "valkey_test_round_trip_ms": round(valkey_test["round_trip_ms"], 1),
    }


def measure_burst(chaos, *, tasks: int) -> dict:
    """Submit SEQUENTIAL tasks one by one (a lone client's latency), then
    ``tasks`` from 8 clients at once; wait until all ended. Returns the
    counts, the client-side latency of POST /task (p50 alone; p50 and p95
    under the burst; ms) and the burst's throughput from its first submit
    to the last completion (tasks/s, in all and per worker)."""
    chaos.accepted.clear()
    alone = []
    session = requests.Session()
    for n in range(SEQUENTIAL):
        started = time.perf_counter()
        chaos.submit(session, n, 2)
        alone.append((time.perf_counter() - started) * 1000)
    alone.sort()
    latencies: list[float] = []
    lock = threading.Lock()
    session_of = threading.local()

    def one(n: int) -> None:
        if not hasattr(session_of, "session"):
            session_of.session = requests.Session()
        started = time.perf_counter()
        chaos.submit(session_of.session, n, 1)
        with lock:
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(tasks)))
    submitted = time.perf_counter() - started
    finished = chaos.wait_all_finished()
    elapsed = time.perf_counter() - started
    workers = len(chaos.workers())
    latencies.sort()
    return {
        "accepted": len(chaos.accepted),
        "complete": sum(t["status"] == "complete" for t in finished.values()),
        "post_alone_p50_ms": round(alone[len(alone) // 2], 1),
        "post_p50_ms": round(latencies[len(latencies) // 2], 1),
        "post_p95_ms": round(latencies[int(len(latencies) * 0.95)], 1),
        "submit_per_second": round(tasks / submitted, 1),
        "tasks_per_second": round(tasks / elapsed, 1),
        "tasks_per_second_per_worker": round(tasks / elapsed / max(workers, 1), 1),
    }


def test_the_primary_partitioned_away_fails_over_refuses_writes_and_loses_no_acked_task(
    start_lab,
):
    chaos = start_lab(
        nodes=3, workers=1, ha=True, WIZARD_WORK_SECONDS=0.005, WIZARD_DURABLE_ACK="replica"
    )
    cluster, net = chaos.cluster, chaos.cluster.network
    old = cluster.ha.primary()
    old_host = cluster.host_of(old.name)
    with chaos.load(limit=3000):
        wait_for(lambda: len(chaos.accepted) >= 150, timeout=60, what="load before the cut")
        before_cut = len(chaos.accepted)
        # The primary and the sentinel beside it: a minority of one.
        net.cut(old_host)
        try:
            started = time.monotonic()
            new = cluster.ha.wait_failover(old, timeout=60)
            failover_seconds = time.monotonic() - started
            refusal = wait_for(
                lambda: write_refused_on(cluster, old_host, old),
                timeout=20,
                what="the isolated old primary refuses writes",
            )
            at_failover = len(chaos.accepted)
            wait_for(
                lambda: len(chaos.accepted) >= at_failover + 150, timeout=60, what="load after"
            )
        finally:
            net.heal(old_host)

    # Healed, the old primary learns it was replaced and becomes a replica.
    wait_for(lambda: role_of(old) == "slave", timeout=60, what="the old primary rejoins as replica")
    tasks = chaos.statuses()
    lost = [i for i, t in tasks.items() if not t]
    finished = chaos.wait_all_finished() if not lost else tasks
    executed_twice = [i for i, n in chaos.completions_logged().items() if n > 1]
    RESULTS["partition_primary"] = {
        "durable_ack": "replica",
        "accepted": len(chaos.accepted),
        "accepted_before_cut": before_cut,
        "refused_or_timed_out": chaos.refused,
        "failover_seconds": round(failover_seconds, 1),
        "old_primary_refused_with": refusal.split()[0],
        "new_primary": new.name,
        "complete": sum(t.get("status") == "complete" for t in finished.values()),
        "lost": len(lost),
        "executed_twice": len(executed_twice),
    }
    assert lost == [], f"{len(lost)} acknowledged tasks are gone: {lost[:3]}"
    assert all(t["status"] == "complete" for t in finished.values())
    assert all(int(finished[i]["result"]) == chaos.accepted[i] for i in finished)


def write_refused_on(cluster, host: str, server) -> str | None:
    """Try a write on ``server`` from inside its own (cut off) host; return
    the error it answered with, or None if it took the write."""
    probe = (
        "import os, valkey\n"
        "c = valkey.Valkey.from_url(os.environ['PROBE_URL'], socket_timeout=2)\n"
        "try:\n"
        "    c.set('wizard:partition:probe', 1)\n"
        "except valkey.ResponseError as e:\n"
        "    print(e)\n"
    )
    argv = [*cluster.network.exec_prefix(host), sys.executable, "-c", probe]
    # The admin's URL (with its password) by environment, not on the command line.
    env = {**os.environ, "PROBE_URL": server.url}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=True, env=env)
    return done.stdout.strip() or None


def role_of(server) -> str | None:
    """What ``server`` says it is now (ROLE), or None if unreachable."""
    reply = server.ask("ROLE")
    return reply[0] if reply else None


@pytest.mark.parametrize("ack", ["aof", "replica"])
def test_a_primary_cut_from_its_replicas_but_not_its_clients_shows_what_the_replica_ack_saves(
    start_lab, ack
):
    """Split brain: the primary (and the sentinel beside it) lose their
    replicas and the two other sentinels, but the nodes still reach it. The
    majority promotes a replica; meanwhile the old primary keeps taking writes
    until min-replicas-max-lag (2 s) says its replicas are gone. Those writes
    are discarded when it rejoins as a replica."""
    chaos = start_lab(
        nodes=3, workers=1, ha=True, WIZARD_WORK_SECONDS=0.005, WIZARD_DURABLE_ACK=ack
    )
    cluster, net = chaos.cluster, chaos.cluster.network
    old = cluster.ha.primary()
    old_host = cluster.host_of(old.name)
    others = [h for h in cluster.valkey_hosts if h != old_host]
    with chaos.load(limit=3000):
        wait_for(lambda: len(chaos.accepted) >= 150, timeout=60, what="load before the split")
        net.partition([old_host], others)
        try:
            split_wall = time.time()
            new = cluster.ha.wait_failover(old, timeout=60)
            refusal = wait_for(lambda: refused_by(old), timeout=20, what="the old primary refuses")
            refused_wall = time.time()
        finally:
            net.mend()
        wait_for(lambda: role_of(old) == "slave", timeout=60, what="the old primary rejoins")
        at_mend = len(chaos.accepted)
        wait_for(lambda: len(chaos.accepted) >= at_mend + 100, timeout=60, what="load after")

    tasks = chaos.statuses()
    lost = {i for i, t in tasks.items() if not t}
    known = {i: t for i, t in tasks.items() if t}
    chaos.accepted = {i: r for i, r in chaos.accepted.items() if i not in lost}
    finished = chaos.wait_all_finished()
    counts = {
        "durable_ack": ack,
        "accepted": len(tasks),
        "lost": len(lost),
        "complete": sum(t["status"] == "complete" for t in finished.values()),
        "failover_to": new.name,
        "old_primary_refused_after_seconds": round(refused_wall - split_wall, 1),
        "old_primary_refused_with": refusal.split()[0],
        "refused_or_timed_out": chaos.refused,
    }
    RESULTS[f"split_brain_ack_{ack}"] = counts
    assert len(finished) == len(known)
    if ack == "replica":
        assert counts["lost"] == 0, counts
    else:
        # The lesson: 202s from the old primary's side, gone after the heal.
        assert counts["lost"] > 0, counts


def refused_by(server) -> str | None:
    """The error ``server`` answers a write with, or None if it takes it."""
    client = valkey.Valkey.from_url(server.url, socket_timeout=2)
    try:
        client.set("wizard:partition:probe", 1, px=1000)
    except valkey.ResponseError as error:
        return str(error)
    finally:
        client.close()
    return None
