"""Graceful shutdown of a real node process (supervisor, API, workers)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from tests.support import alive, wait_for
from wizard import queue, store
from wizard.cluster import children_of, free_port


@pytest.fixture
def start_node(settings, tmp_path):
    """Start `python -m wizard node` with extra settings; stopped by PID."""
    started = []

    def start(**env):
        environment = {
            **os.environ,
            "VALKEY_URL": settings.valkey_url,
            "WIZARD_NODE_ID": "node-1",
            "WIZARD_HOST": "127.0.0.1",
            "WIZARD_PORT": str(free_port()),
            "WIZARD_WORKERS": "1",
            "WIZARD_LEASE_SECONDS": "2",
            "WIZARD_BLOCK_SECONDS": "0.2",
            **{key: str(value) for key, value in env.items()},
        }
        log = open(tmp_path / f"node-{len(started)}.log", "wb")
        node = subprocess.Popen(
            [sys.executable, "-m", "wizard", "node"], env=environment, stdout=log, stderr=log
        )
        started.append((node, log))
        return node

    yield start
    for node, log in started:
        if node.poll() is None:
            node.kill()
            node.wait()
        log.close()


def wait_running(client, task_id):
    """Wait until the worker is computing ``task_id``: its heartbeat card
    names the task. The task's status alone ("running") is set when it is
    claimed, a moment before the computation starts; a SIGTERM in between
    gives it back as never started (attempt undone), not as "shutdown"."""
    key = store.task_key(task_id)
    wait_for(lambda: client.hget(key, "status") == "running", what="the worker takes the task")

    def computing():
        card = client.hget(store.WORKER_REGISTRY, "node-1/w1")
        return card is not None and json.loads(card).get("task_id") == task_id

    wait_for(computing, what="the worker computes the task (its card names it)")


def test_on_sigterm_a_worker_finishes_its_task_and_the_node_exits_0(client, start_node):
    # One CPU-second of work can take many seconds of wall time on a busy
    # machine: the grace period is wide so that only a bug runs it out.
    node = start_node(WIZARD_WORK_SECONDS=1, WIZARD_GRACE_SECONDS=40)
    task_id = queue.submit(client, "add", 2, 3, accepted_by="test")
    wait_running(client, task_id)
    family = [node.pid, *children_of(node.pid)]

    node.send_signal(signal.SIGTERM)

    assert node.wait(timeout=50) == 0
    task = queue.status(client, task_id)
    assert task.status is queue.TaskStatus.COMPLETE and task.result == 5
    wait_for(lambda: not any(alive(pid) for pid in family), timeout=5, what="no orphan")


def test_past_the_grace_period_the_task_goes_straight_back_to_the_queue(client, start_node):
    node = start_node(WIZARD_WORK_SECONDS=30, WIZARD_GRACE_SECONDS=0.5)
    task_id = queue.submit(client, "add", 2, 3, accepted_by="test")
    wait_running(client, task_id)

    node.send_signal(signal.SIGTERM)

    assert node.wait(timeout=15) == 0
    task = queue.status(client, task_id)
    assert task.status is queue.TaskStatus.PENDING and task.reason == "shutdown"
    assert client.lrange(store.TASK_QUEUE, 0, -1) == [task_id]
    assert client.llen(store.processing_key("node-1/w1")) == 0


def test_a_worker_that_dies_is_restarted_by_its_supervisor(client, start_node):
    node = start_node(WIZARD_WORK_SECONDS=0)
    card = wait_for(lambda: client.hget(store.WORKER_REGISTRY, "node-1/w1"), what="a heartbeat")
    first_pid = json.loads(card)["pid"]

    os.kill(first_pid, signal.SIGKILL)

    def new_pid():
        raw = client.hget(store.WORKER_REGISTRY, "node-1/w1")
        pid = json.loads(raw)["pid"]
        return pid if pid != first_pid else None

    wait_for(new_pid, timeout=10, what="a restarted worker")
    task_id = queue.submit(client, "add", 1, 1, accepted_by="test")
    wait_for(lambda: queue.status(client, task_id).status.value == "complete", what="it works")
    node.send_signal(signal.SIGTERM)
    assert node.wait(timeout=20) == 0


#: A parent that spawns one child the way the supervisor does (its
#: ``_child_main``) with a target that never polls anything (a long sleep),
#: prints the child's PID, then waits to be killed.
SPAWNING_PARENT = """
import multiprocessing, os, sys, time
from wizard.supervisor import _child_main

if __name__ == "__main__":
    child = multiprocessing.get_context("spawn").Process(
        target=_child_main, args=(int(sys.argv[1]) or os.getpid(), time.sleep, 600)
    )
    child.start()
    print(child.pid, flush=True)
    time.sleep(600)
"""


def spawn_sleeping_child(tmp_path, parent_pid: int = 0) -> tuple[subprocess.Popen, int]:
    """Start SPAWNING_PARENT (``parent_pid`` 0: the child is told its real
    parent); return the parent and the child's PID."""
    script = tmp_path / "spawning_parent.py"
    script.write_text(SPAWNING_PARENT)
    parent = subprocess.Popen(
        [sys.executable, str(script), str(parent_pid)], stdout=subprocess.PIPE, text=True
    )
    return parent, int(parent.stdout.readline())


def test_a_child_ends_when_its_supervisor_is_killed_even_if_it_never_polls(tmp_path):
    parent, child = spawn_sleeping_child(tmp_path)
    try:
        wait_for(lambda: child in children_of(parent.pid), timeout=10, what="the child runs")
        parent.kill()
        parent.wait()
        wait_for(lambda: not alive(child), timeout=10, what="the orphaned child ends")
    finally:
        parent.kill()
        parent.wait()
        if alive(child):
            os.kill(child, signal.SIGKILL)


def test_a_child_whose_supervisor_died_before_its_first_step_ends_at_once(tmp_path):
    # The prctl cannot cover a parent that died before it ran: the child
    # compares its parent with the one it was given (here, one that is not).
    parent, child = spawn_sleeping_child(tmp_path, parent_pid=os.getpid())
    try:
        wait_for(lambda: not alive(child), timeout=30, what="the child ends by itself")
    finally:
        parent.kill()
        parent.wait()
        if alive(child):
            os.kill(child, signal.SIGKILL)
