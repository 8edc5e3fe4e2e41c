"""Chaos: the promise of 202 Accepted under crashes, pauses, restarts and
poison input, on the real local cluster (Valkey, nodes, nginx).

Every scenario is bounded in time and records its counts in RESULTS.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time

import pytest
import requests

from tests.chaos.conftest import RESULTS, every
from tests.support import wait_for
from wizard import store

pytestmark = pytest.mark.chaos


def test_sigkill_of_a_random_worker_every_half_second_loses_and_duplicates_nothing(
    start_cluster,
):
    chaos = start_cluster(nodes=3, workers=2, WIZARD_WORK_SECONDS=0.01, WIZARD_MAX_ATTEMPTS=5)
    rng = random.Random(2026)
    killed_tasks: set[str] = set()
    loader = threading.Thread(target=chaos.submit_many, args=(2000,))
    loader.start()
    every(0.5, 20, lambda: killed_tasks.update(chaos.kill_random_worker(rng)))
    loader.join()

    tasks = chaos.wait_all_finished(timeout=120)

    assert len(chaos.accepted) == 2000, f"{chaos.refused} submissions were refused"
    wrong = [i for i, t in tasks.items() if t["status"] != "complete"]
    assert wrong == [], f"not complete: {[tasks[i] for i in wrong[:3]]}"
    for task_id, task in tasks.items():
        assert int(task["result"]) == chaos.accepted[task_id]
    assert killed_tasks, "no kill hit a worker while it held a task"
    assert all(int(tasks[t]["attempts"]) > 1 for t in killed_tasks)
    # Exactly once: the fenced finish script counts each accepted result...
    assert chaos.stat("complete:add") == 2000
    # ...and no task was completed twice in the logs (a worker killed right
    # after its write may not have logged it: the log is not the record).
    logged = chaos.completions_logged()
    assert set(logged.values()) == {1} and len(logged) >= 2000 - 20
    RESULTS["sigkill_workers"] = {
        "tasks": 2000,
        "kills": 20,
        "complete": 2000,
        "lost": 0,
        "duplicated": 0,
        "tasks_held_by_killed_workers": len(killed_tasks),
        "retried_attempts": chaos.stat("retried"),
        "max_attempts_seen": max(int(t["attempts"]) for t in tasks.values()),
    }


def test_a_worker_paused_past_its_lease_has_its_late_write_refused(start_cluster):
    chaos = start_cluster(nodes=2, workers=1, WIZARD_WORK_SECONDS=1.0)
    chaos.submit(requests.Session(), 20, 22)
    (task_id,) = chaos.accepted
    key = store.task_key(task_id)

    def holder():
        running = chaos.valkey.hget(key, "status") == "running"
        return running and chaos.valkey.hget(key, "handled_by")

    first = wait_for(holder, what="a worker takes the task")
    pid = chaos.workers()[first]
    os.kill(pid, signal.SIGSTOP)
    try:
        done = wait_for(
            lambda: chaos.valkey.hget(key, "status") == "complete" and chaos.valkey.hgetall(key),
            timeout=20,
            what="another worker completes the task",
        )
    finally:
        os.kill(pid, signal.SIGCONT)
    assert done["handled_by"] != first and done["attempts"] == "2"

    wait_for(lambda: chaos.stat("fenced_writes") >= 1, what="the late write is refused")

    after = chaos.valkey.hgetall(key)
    assert after["result"] == "42"
    assert after["handled_by"] == done["handled_by"]
    assert after["finished_at"] == done["finished_at"]
    # The log line follows the write by a moment: wait for it, then no other.
    logged = wait_for(chaos.completions_logged, what="the completion in the logs")
    assert logged == {task_id: 1}
    RESULTS["paused_worker"] = {
        "paused": first,
        "finished_by": done["handled_by"],
        "fenced_writes": chaos.stat("fenced_writes"),
        "results_stored": 1,
    }


@pytest.mark.parametrize(
    "durable, signum",
    [(False, signal.SIGTERM), (True, signal.SIGKILL)],
    ids=["sigterm", "sigkill-durable-ack"],
)
def test_valkey_killed_and_restarted_mid_run_keeps_every_accepted_task(
    start_cluster, durable, signum
):
    chaos = start_cluster(
        nodes=3, workers=1, WIZARD_WORK_SECONDS=0.005, WIZARD_DURABLE_ACK=int(durable)
    )
    stop = threading.Event()

    def keep_submitting():
        session = requests.Session()
        n = 0
        while not stop.is_set() and n < 5000:
            chaos.submit(session, n, 1)
            n += 1

    loaders = [threading.Thread(target=keep_submitting) for _ in range(4)]
    for loader in loaders:
        loader.start()
    try:
        wait_for(lambda: len(chaos.accepted) >= 200, what="load before the crash")
        chaos.cluster.kill_valkey(signum)
        refused_before = chaos.refused
        wait_for(lambda: chaos.refused > refused_before, what="a 503 while Valkey is down")
        chaos.cluster.start_valkey()
        accepted_at_restart = len(chaos.accepted)
        wait_for(lambda: len(chaos.accepted) >= accepted_at_restart + 200, what="load after")
    finally:
        stop.set()
        for loader in loaders:
            loader.join()

    tasks = chaos.wait_all_finished(timeout=90)

    lost = [i for i, t in tasks.items() if t.get("status") != "complete"]
    assert lost == [], f"{len(lost)} accepted tasks did not complete: {lost[:3]}"
    for task_id, task in tasks.items():
        assert int(task["result"]) == chaos.accepted[task_id]
    RESULTS[f"valkey_restart_{'durable_sigkill' if durable else 'sigterm'}"] = {
        "accepted": len(chaos.accepted),
        "refused_while_down": chaos.refused,
        "complete": len(tasks) - len(lost),
        "lost": len(lost),
    }


def test_sigterm_to_one_node_during_a_burst_loses_nothing_and_leaves_nothing_running(
    start_cluster,
):
    chaos = start_cluster(nodes=3, workers=2, WIZARD_WORK_SECONDS=0.05)
    loader = threading.Thread(target=chaos.submit_many, args=(600,))
    loader.start()
    wait_for(lambda: len(chaos.accepted) >= 150, what="the burst is under way")

    exit_code = chaos.cluster.stop_node("node-2", signal.SIGTERM)
    loader.join()

    assert exit_code == 0
    tasks = chaos.wait_all_finished(timeout=90)
    assert all(t["status"] == "complete" for t in tasks.values())
    assert not any(t.get("lease_owner") for t in tasks.values())
    assert chaos.valkey.llen(store.processing_key("node-2/w1")) == 0
    assert chaos.valkey.llen(store.processing_key("node-2/w2")) == 0
    RESULTS["sigterm_node"] = {
        "accepted": len(chaos.accepted),
        "refused_while_stopping": chaos.refused,
        "complete": len(tasks),
        "left_running": 0,
        "node_exit_code": exit_code,
    }


def test_a_poison_task_is_dead_lettered_while_other_tasks_keep_completing(start_cluster):
    chaos = start_cluster(
        nodes=2,
        workers=2,
        WIZARD_WORK_SECONDS=0.01,
        WIZARD_CHAOS_OPERATIONS=1,
        WIZARD_MAX_ATTEMPTS=3,
    )
    session = requests.Session()
    chaos.submit(session, 1, 1, "crash")
    (poison,) = chaos.accepted
    chaos.accepted.clear()
    stop = threading.Event()

    def keep_submitting():
        n = 0
        while not stop.is_set() and n < 3000:
            chaos.submit(session, n, 2)
            n += 1

    loader = threading.Thread(target=keep_submitting)
    loader.start()
    try:
        wait_for(
            lambda: poison in chaos.valkey.lrange(store.DEAD_LETTER_QUEUE, 0, -1),
            timeout=45,
            what="the poison task reaches the dead-letter queue",
        )
    finally:
        stop.set()
        loader.join()

    dead = chaos.valkey.hgetall(store.task_key(poison))
    assert dead["status"] == "failed" and dead["reason"] == "worker_lost"
    assert dead["attempts"] == "3"
    tasks = chaos.wait_all_finished(timeout=60)
    assert all(t["status"] == "complete" for t in tasks.values())
    assert len(tasks) > 100, "other tasks kept completing meanwhile"
    RESULTS["poison_task"] = {
        "poison_attempts": int(dead["attempts"]),
        "dead_lettered": 1,
        "other_tasks_completed_meanwhile": len(tasks),
    }


def test_the_original_brpop_consumer_loses_tasks_when_workers_are_killed(start_cluster):
    chaos = start_cluster(nodes=3, workers=2, WIZARD_WORK_SECONDS=0.02, WIZARD_FETCH="brpop")
    rng = random.Random(7)
    loader = threading.Thread(target=chaos.submit_many, args=(600,))
    loader.start()
    every(0.5, 6, lambda: chaos.kill_random_worker(rng))
    loader.join()
    wait_for(lambda: chaos.valkey.llen(store.TASK_QUEUE) == 0, timeout=60, what="queue drained")

    def settled():
        # Unfinished tasks untouched for 2 s (200 times the work) are lost:
        # nothing will ever pick them up again.
        tasks = chaos.statuses()
        now = time.time()
        moving = [
            t
            for t in tasks.values()
            if t["status"] in ("pending", "running")
            and now - float(t.get("started_at") or t["created_at"]) < 2
        ]
        return None if moving else tasks

    tasks = wait_for(settled, timeout=30, what="only lost tasks remain unfinished")

    lost = [t for t in tasks.values() if t["status"] in ("pending", "running")]
    complete = sum(t["status"] == "complete" for t in tasks.values())
    assert len(lost) >= 1, "the BRPOP design should have lost at least one task"
    assert complete + len(lost) == len(tasks)
    assert chaos.valkey.llen(store.TASK_QUEUE) == 0
    RESULTS["brpop_sigkill"] = {
        "tasks": len(tasks),
        "kills": 6,
        "complete": complete,
        "lost_forever": len(lost),
    }
