"""One worker step at a time (work_once), on a real Valkey."""

from __future__ import annotations

import dataclasses
import threading

from tests.support import wait_for
from wizard import queue, store
from wizard.faults import retry_delay
from wizard.scheduler import Scheduler
from wizard.worker import Worker


def submit(client, operation="add", a=1, b=2):
    return queue.submit(client, operation, a, b, accepted_by="node-1")


def test_work_once_takes_runs_and_records_one_task(settings, client):
    task_id = submit(client, "multiply", 6, 7)
    worker = Worker(settings, "node-1/w1", client)

    assert worker.work_once() == "complete"

    task = queue.status(client, task_id)
    assert task.status is queue.TaskStatus.COMPLETE and task.result == 42
    assert task.handled_by == "node-1/w1" and task.attempts == 1
    assert worker.tasks_done == 1
    assert client.hget(store.stats_key("node-1"), "complete:multiply") == "1"


def test_work_once_returns_none_on_an_empty_queue(settings, client):
    assert Worker(settings, "node-1/w1", client).work_once() is None


def test_division_by_zero_fails_at_once_without_a_retry(settings, client):
    task_id = submit(client, "divide", 1, 0)

    assert Worker(settings, "node-1/w1", client).work_once() == "failed"

    task = queue.status(client, task_id)
    assert task.status is queue.TaskStatus.FAILED
    assert task.error == "division by zero" and task.attempts == 1
    assert client.zcard(store.DELAYED_QUEUE) == 0


def test_an_unknown_operation_that_slipped_past_the_api_fails_permanently(settings, client):
    task_id = submit(client, "modulo", 1, 2)

    assert Worker(settings, "node-1/w1", client).work_once() == "failed"

    assert "unknown operation" in queue.status(client, task_id).error


def test_an_operation_over_its_time_limit_is_retried_with_backoff_then_dead_lettered(
    settings, client
):
    slow = dataclasses.replace(settings, work_seconds=1.0, task_timeout=0.1, max_attempts=2)
    task_id = submit(client)
    worker = Worker(slow, "node-1/w1", client)

    assert worker.work_once() == "retry"
    task = queue.status(client, task_id)
    assert task.status is queue.TaskStatus.PENDING and task.reason == "timeout"
    assert client.zscore(store.DELAYED_QUEUE, task_id) is not None

    client.zadd(store.DELAYED_QUEUE, {task_id: 0})
    queue.promote_due(queue.Scripts(client))
    assert worker.work_once() == "dead"
    assert client.lrange(store.DEAD_LETTER_QUEUE, 0, -1) == [task_id]


def test_beat_writes_a_heartbeat_that_expires_after_one_lease(settings, client):
    worker = Worker(settings, "node-1/w1", client)

    worker.beat()

    ttl_ms = client.pttl(store.heartbeat_key("node-1/w1"))
    assert 0 < ttl_ms <= settings.lease_seconds * 1000
    assert "node-1/w1" in client.hkeys(store.WORKER_REGISTRY)


def test_the_lease_is_renewed_while_the_operation_keeps_the_cpu_busy(settings, client):
    # The task takes 1.5 leases of pure CPU; the heartbeat thread must keep the
    # lease alive, or the reaper (running meanwhile) would hand the task back.
    # CPU seconds last longer on a busy machine: the time limit is not tested here.
    busy = dataclasses.replace(
        settings, work_seconds=settings.lease_seconds * 1.5, task_timeout=300
    )
    task_id = submit(client)
    worker = Worker(busy, "node-1/w1", client)
    reaper = Scheduler(busy)
    heartbeat = threading.Thread(target=worker._heartbeat_loop, daemon=True)
    heartbeat.start()
    stop_reaping = threading.Event()

    def reap_until_stopped():
        while not stop_reaping.is_set():
            reaper.tick()
            stop_reaping.wait(0.1)

    reaping = threading.Thread(target=reap_until_stopped, daemon=True)
    reaping.start()
    try:
        outcome = worker.work_once()
    finally:
        stop_reaping.set()
        worker._stopping.set()
        reaping.join()
        heartbeat.join()

    assert outcome == "complete"
    task = queue.status(client, task_id)
    assert task.attempts == 1 and task.result == 3


def test_reconnect_delays_grow_and_stay_capped():
    ceilings = [max(retry_delay(n) for _ in range(200)) for n in (1, 3, 10, 30)]

    assert ceilings[0] <= 0.2 + 1e-9
    assert ceilings[0] < ceilings[1] < ceilings[2]
    assert ceilings[3] <= 5.0


def test_a_worker_finishes_tasks_submitted_while_it_is_running(settings, client):
    worker = Worker(settings, "node-1/w1")
    thread = threading.Thread(target=_run_without_signals, args=(worker,), daemon=True)
    thread.start()
    try:
        ids = [submit(client, "add", n, n) for n in range(5)]
        wait_for(
            lambda: all(queue.status(client, i).status.value == "complete" for i in ids),
            what="5 tasks complete",
        )
    finally:
        worker.stop("test over")
        thread.join(timeout=5)
    assert not thread.is_alive()
    assert [queue.status(client, i).result for i in ids] == [0, 2, 4, 6, 8]


def _run_without_signals(worker):
    # Signal handlers can only be installed in the main thread; the loop's
    # logic is the same without them.
    worker._install_signal_handlers = lambda: None
    worker.run()
