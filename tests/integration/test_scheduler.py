"""The reaper and the retry clock, on a real Valkey."""

from __future__ import annotations

import dataclasses

from tests.support import wait_for
from wizard import queue, store
from wizard.scheduler import Scheduler
from wizard.worker import Worker


def submit(client):
    return queue.submit(client, "add", 1, 2, accepted_by="node-1")


def take_fresh(settings, client, worker_id):
    """Take a task with a full lease, as a worker does."""
    return queue.take(
        client,
        queue.Scripts(client),
        worker_id,
        lease_ms=int(settings.lease_seconds * 1000),
        block_seconds=0.1,
    )


def take_as(settings, client, worker_id):
    """Take a task as a worker that then died: it never heartbeats, and its
    lease has run out (what a lease's worth of silence does)."""
    claim = take_fresh(settings, client, worker_id)
    client.hset(store.task_key(claim.task_id), "lease_expires", 1)
    return claim


def test_the_task_of_a_dead_worker_is_handed_back_with_its_attempt_counted(settings, client):
    task_id = submit(client)
    take_as(settings, client, "node-9/w1")

    retried, dead = Scheduler(settings).reap()

    assert (retried, dead) == (1, 0)
    task = queue.status(client, task_id)
    assert task.status is queue.TaskStatus.PENDING
    assert task.attempts == 1 and task.reason == "worker_lost"
    assert client.llen(store.processing_key("node-9/w1")) == 0
    assert client.zscore(store.DELAYED_QUEUE, task_id) is not None


def test_a_handed_back_task_is_promoted_when_due_and_completed_by_another_worker(settings, client):
    task_id = submit(client)
    take_as(settings, client, "node-9/w1")
    scheduler = Scheduler(settings)
    scheduler.reap()
    client.zadd(store.DELAYED_QUEUE, {task_id: 0})

    assert scheduler.tick()["promoted"] == 1
    assert Worker(settings, "node-1/w1", client).work_once() == "complete"

    task = queue.status(client, task_id)
    assert task.attempts == 2 and task.handled_by == "node-1/w1"


def test_after_the_last_attempt_a_lost_task_is_dead_lettered_as_worker_lost(settings, client):
    once = dataclasses.replace(settings, max_attempts=1)
    task_id = submit(client)
    take_as(once, client, "node-9/w1")

    assert Scheduler(once).reap() == (0, 1)

    assert client.lrange(store.DEAD_LETTER_QUEUE, 0, -1) == [task_id]
    task = queue.status(client, task_id)
    assert task.status is queue.TaskStatus.FAILED and task.reason == "worker_lost"
    assert "node-9/w1" in task.error


def test_a_lease_that_ran_out_in_valkey_trouble_is_handed_back_without_using_an_attempt(
    settings, client
):
    # One attempt allowed: counted, this loss would dead-letter the task.
    once = dataclasses.replace(settings, max_attempts=1)
    task_id = submit(client)
    take_as(once, client, "node-9/w1")
    scheduler = Scheduler(once)
    scheduler.after_trouble(0)  # what a failed round (Valkey away) calls
    scheduler.quiet_until = 0  # the quiet lease after trouble has passed

    tick = scheduler.tick()

    assert (tick["reaped"], tick["dead_lettered"]) == (1, 0)
    task = queue.status(client, task_id)
    assert task.status is queue.TaskStatus.PENDING and task.reason == "store_unavailable"
    assert task.attempts == 1  # still the fencing token
    assert client.hget(store.task_key(task_id), "outage_attempts") == "1"
    # Back at the front of the queue at once, no backoff: it did nothing wrong.
    assert client.lrange(store.TASK_QUEUE, 0, -1) == [task_id]
    # The next attempt is a counted one: it completes, or uses up the budget.
    assert Worker(once, "node-1/w1", client).work_once() == "complete"


def test_a_lease_that_ran_out_after_the_trouble_window_counts_again(settings, client):
    once = dataclasses.replace(settings, max_attempts=1)
    task_id = submit(client)
    take_as(once, client, "node-9/w1")
    scheduler = Scheduler(once)
    # Trouble long ago: leases ending up to t = 1000 ms were forgiven; this
    # one ended at t = 2000 ms, when its worker could have renewed it.
    scheduler.forgive_before_ms = 1000
    client.hset(store.task_key(task_id), "lease_expires", 2000)

    assert scheduler.reap() == (0, 1)
    assert queue.status(client, task_id).reason == "worker_lost"


def test_a_live_worker_with_a_valid_lease_keeps_its_task(settings, client):
    task_id = submit(client)
    worker = Worker(settings, "node-1/w1", client)
    worker.beat()
    take_fresh(settings, client, "node-1/w1")

    assert Scheduler(settings).reap() == (0, 0)
    assert queue.status(client, task_id).status is queue.TaskStatus.RUNNING


def test_a_task_taken_before_the_first_heartbeat_is_kept_while_its_lease_holds(settings, client):
    # A worker just started: its take raced ahead of its first heartbeat.
    task_id = submit(client)
    take_fresh(settings, client, "node-1/w1")

    assert Scheduler(settings).reap() == (0, 0)
    assert queue.status(client, task_id).status is queue.TaskStatus.RUNNING


def test_an_expired_lease_is_reaped_even_if_the_worker_still_heartbeats(settings, client):
    submit(client)
    Worker(settings, "node-1/w1", client).beat()
    take_as(settings, client, "node-1/w1")

    assert Scheduler(settings).reap() == (1, 0)


def test_a_task_moved_but_never_claimed_by_a_dead_worker_goes_back_to_the_queue(settings, client):
    task_id = submit(client)
    client.lmove(store.TASK_QUEUE, store.processing_key("node-9/w1"), "RIGHT", "LEFT")

    Scheduler(settings).reap()

    assert client.lrange(store.TASK_QUEUE, 0, -1) == [task_id]
    assert queue.status(client, task_id).attempts == 0


def test_only_one_node_leads_and_another_takes_over_when_its_lock_expires(settings, client):
    first = Scheduler(settings)
    second = Scheduler(dataclasses.replace(settings, node_id="node-2"))

    assert first.tick()["leader"] is True
    assert second.tick() == {"leader": False}
    assert first.tick()["leader"] is True

    client.delete(store.SCHEDULER_LOCK)  # what the lock's expiry does when node-1 dies
    assert second.tick()["leader"] is True
    assert first.tick() == {"leader": False}


def test_the_scheduler_keeps_the_recent_tasks_list_bounded(settings, client):
    client.lpush(store.RECENT_TASKS, *[f"{n:032x}" for n in range(store.RECENT_LIMIT + 50)])

    Scheduler(settings).tick()

    assert client.llen(store.RECENT_TASKS) == store.RECENT_LIMIT


def test_an_id_left_unclaimed_in_a_live_workers_list_goes_back_after_a_lease(settings, client):
    # The worker's BLMOVE moved the id, but the reply never reached it
    # (Valkey crashed or stalled): the worker is alive and will not claim it.
    quick = dataclasses.replace(settings, lease_seconds=0.5)
    Worker(quick, "node-1/w1", client).beat()
    task_id = submit(client)
    client.lmove(store.TASK_QUEUE, store.processing_key("node-1/w1"), "RIGHT", "LEFT")
    scheduler = Scheduler(quick)

    scheduler.reap()
    assert client.llen(store.TASK_QUEUE) == 0, "a fresh move may be claimed any moment"

    def requeued():
        Worker(quick, "node-1/w1", client).beat()  # the worker stays alive
        scheduler.reap()
        return client.lrange(store.TASK_QUEUE, 0, -1) == [task_id]

    wait_for(requeued, timeout=5, what="the unclaimed id back in the queue")
    assert client.llen(store.processing_key("node-1/w1")) == 0
    assert queue.status(client, task_id).attempts == 0


def test_requeueing_never_takes_a_task_a_worker_claimed_meanwhile(settings, client):
    task_id = submit(client)
    take_as(settings, client, "node-1/w1")  # claimed: running

    assert queue.requeue_unclaimed(queue.Scripts(client), task_id, "node-1/w1") is False

    assert client.lrange(store.processing_key("node-1/w1"), 0, -1) == [task_id]
    assert client.llen(store.TASK_QUEUE) == 0
