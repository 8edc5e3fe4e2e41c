"""The fences, as promised: a stale lease holder writes while the NEXT
attempt is running, and its write is refused (and counted).

finish.lua, retry.lua and renew.lua each check three things before writing:
the task is ``running``, the lease is the caller's (``lease_owner``), and it
is the caller's attempt (``attempts``, the fencing token). Each test below
fails if exactly one of those checks goes missing (tests/integration/
test_mutations.py removes each in turn and runs these).

The last tests hold the recovery scripts (unclaim, redrive) to their own
guards. Every function takes only ``client`` and ``scripts``, so the
mutation test can call it with a script changed on purpose.
"""

from __future__ import annotations

import dataclasses

import pytest

from tests.support import wait_for
from wizard import queue, store

STALE, NEXT = "node-1/w1", "node-2/w1"


@pytest.fixture
def scripts(client):
    return queue.Scripts(client)


def take(client, scripts, worker_id):
    claim = queue.take(client, scripts, worker_id, lease_ms=60_000, block_seconds=0.1)
    assert claim is not None, f"{worker_id} found nothing to take"
    return claim


def reap(scripts, claim, *, max_attempts=5):
    """Hand ``claim``'s task back as the reaper does for a lost worker."""
    lost = queue.HandBack(claim.task_id, claim.worker_id, claim.attempt, "worker_lost", "lost")
    policy = queue.RetryPolicy(
        max_attempts=max_attempts, base_backoff_seconds=0, result_ttl_seconds=60
    )
    return queue.retry(scripts, lost, policy, node_id="node-1")


def finish(client, scripts, claim, result=3):
    return queue.finish(
        client,
        scripts,
        claim,
        node_id="node-1",
        result_ttl=60,
        result=result,
    )


def fenced(client) -> int:
    return int(client.hget(store.stats_key("node-1"), "fenced_writes") or 0)


def next_attempt_running(client, scripts, next_worker=NEXT):
    """Attempt 1 by STALE is lost (reaped); attempt 2 by ``next_worker`` runs.
    Returns (stale claim, running claim)."""
    queue.submit(client, "add", 1, 2, accepted_by="node-1")
    stale = take(client, scripts, STALE)
    assert reap(scripts, stale) is queue.RetryOutcome.RETRY
    running = take(client, scripts, next_worker)
    assert running.attempt == 2
    return stale, running


def assert_untouched(client, running):
    task = client.hgetall(store.task_key(running.task_id))
    assert task["status"] == "running"
    assert task["lease_owner"] == running.worker_id
    assert task["attempts"] == str(running.attempt)
    assert "result" not in task
    assert client.ttl(store.task_key(running.task_id)) == -1


# --- finish ------------------------------------------------------------------


def test_a_stale_finish_while_the_next_attempt_runs_is_refused_and_counted(client, scripts):
    stale, running = next_attempt_running(client, scripts)

    assert finish(client, scripts, stale, result=99) is False

    assert fenced(client) == 1
    assert_untouched(client, running)
    assert finish(client, scripts, running) is True


def test_a_finish_from_another_worker_with_the_running_attempt_number_is_refused(client, scripts):
    _, running = next_attempt_running(client, scripts)
    impostor = dataclasses.replace(running, worker_id="node-9/w1")

    assert finish(client, scripts, impostor, result=99) is False

    assert fenced(client) == 1
    assert_untouched(client, running)


def test_a_stale_finish_by_the_same_worker_holding_the_next_attempt_is_refused(client, scripts):
    stale, running = next_attempt_running(client, scripts, next_worker=STALE)

    assert finish(client, scripts, stale, result=99) is False

    assert fenced(client) == 1
    assert_untouched(client, running)


def test_a_finish_on_a_task_that_is_not_running_is_refused(client, scripts):
    # Not reachable through the scripts (every end clears lease_owner), so
    # built by hand: a pending task that still names its last holder.
    stale, _ = next_attempt_running(client, scripts)
    client.hset(store.task_key(stale.task_id), mapping={"status": "pending", "attempts": 1})
    client.hset(store.task_key(stale.task_id), "lease_owner", STALE)

    assert finish(client, scripts, stale, result=99) is False

    assert fenced(client) == 1
    assert client.hget(store.task_key(stale.task_id), "status") == "pending"


def test_a_repeated_finish_of_the_same_attempt_is_accepted_and_writes_once(client, scripts):
    queue.submit(client, "add", 1, 2, accepted_by="node-1")
    claim = take(client, scripts, STALE)

    assert finish(client, scripts, claim) is True
    written = client.hgetall(store.task_key(claim.task_id))
    assert finish(client, scripts, claim) is True

    assert fenced(client) == 0
    # Written once: the repeat changed nothing (counts are the worker's).
    assert client.hgetall(store.task_key(claim.task_id)) == written


def test_a_stale_finish_after_the_next_attempt_completed_is_refused(client, scripts):
    stale, running = next_attempt_running(client, scripts, next_worker=STALE)
    assert finish(client, scripts, running) is True

    assert finish(client, scripts, stale, result=99) is False

    assert fenced(client) == 1
    assert client.hget(store.task_key(stale.task_id), "result") == "3"


# --- retry (a hand-back) -------------------------------------------------------


def test_a_stale_hand_back_while_the_next_attempt_runs_is_refused_and_counted(client, scripts):
    stale, running = next_attempt_running(client, scripts)

    assert reap(scripts, stale) is queue.RetryOutcome.FENCED

    assert fenced(client) == 1
    assert_untouched(client, running)
    assert client.llen(store.TASK_QUEUE) == 0


def test_a_hand_back_from_another_worker_with_the_running_attempt_is_refused(client, scripts):
    _, running = next_attempt_running(client, scripts)
    impostor = dataclasses.replace(running, worker_id="node-9/w1")

    assert reap(scripts, impostor) is queue.RetryOutcome.FENCED

    assert fenced(client) == 1
    assert_untouched(client, running)


def test_a_stale_hand_back_by_the_worker_holding_the_next_attempt_is_refused(client, scripts):
    stale, running = next_attempt_running(client, scripts, next_worker=STALE)

    assert reap(scripts, stale) is queue.RetryOutcome.FENCED

    assert fenced(client) == 1
    assert_untouched(client, running)


def test_a_hand_back_of_a_task_that_is_not_running_is_refused(client, scripts):
    # Built by hand, as above: pending, yet still naming its last holder.
    stale, _ = next_attempt_running(client, scripts)
    client.hset(store.task_key(stale.task_id), mapping={"status": "pending", "attempts": 1})
    client.hset(store.task_key(stale.task_id), "lease_owner", STALE)
    client.delete(store.TASK_QUEUE)

    assert reap(scripts, stale) is queue.RetryOutcome.FENCED

    assert fenced(client) == 1
    assert client.llen(store.TASK_QUEUE) == 0


def test_a_hand_back_of_a_task_that_expired_is_gone_not_fenced(client, scripts):
    stale, running = next_attempt_running(client, scripts)
    client.delete(store.task_key(running.task_id))

    assert reap(scripts, running) is queue.RetryOutcome.GONE
    assert fenced(client) == 0


# --- renew ----------------------------------------------------------------------


def lease(client, claim) -> str:
    return client.hget(store.task_key(claim.task_id), "lease_expires")


def test_a_stale_renew_while_the_next_attempt_runs_is_refused(client, scripts):
    stale, running = next_attempt_running(client, scripts)
    before = lease(client, running)

    assert queue.renew(client, scripts, stale, lease_ms=999_999) is False

    assert lease(client, running) == before


def test_a_renew_from_another_worker_with_the_running_attempt_is_refused(client, scripts):
    _, running = next_attempt_running(client, scripts)
    impostor = dataclasses.replace(running, worker_id="node-9/w1")
    before = lease(client, running)

    assert queue.renew(client, scripts, impostor, lease_ms=999_999) is False

    assert lease(client, running) == before


def test_a_stale_renew_by_the_worker_holding_the_next_attempt_is_refused(client, scripts):
    stale, running = next_attempt_running(client, scripts, next_worker=STALE)
    before = lease(client, running)

    assert queue.renew(client, scripts, stale, lease_ms=999_999) is False

    assert lease(client, running) == before


def test_a_renew_of_a_finished_task_that_still_names_its_holder_is_refused(client, scripts):
    # Built by hand: complete, yet still naming its holder and attempt.
    queue.submit(client, "add", 1, 2, accepted_by="node-1")
    claim = take(client, scripts, STALE)
    client.hset(store.task_key(claim.task_id), "status", "complete")

    assert queue.renew(client, scripts, claim, lease_ms=999_999) is False


def test_the_holder_renews_its_own_lease(client, scripts):
    queue.submit(client, "add", 1, 2, accepted_by="node-1")
    claim = take(client, scripts, STALE)
    before = int(lease(client, claim))

    assert queue.renew(client, scripts, claim, lease_ms=999_999) is True

    assert int(lease(client, claim)) > before


def test_a_finish_from_another_worker_after_that_attempt_completed_is_refused(client, scripts):
    _, running = next_attempt_running(client, scripts)
    assert finish(client, scripts, running) is True
    impostor = dataclasses.replace(running, worker_id="node-9/w1")

    assert finish(client, scripts, impostor, result=99) is False

    assert fenced(client) == 1
    assert client.hget(store.task_key(running.task_id), "result") == "3"


# --- the recovery scripts' guards ------------------------------------------------


def test_an_unclaimed_id_is_requeued_once_even_if_asked_twice(client, scripts):
    task_id = queue.submit(client, "add", 1, 2, accepted_by="node-1")
    client.lmove(store.TASK_QUEUE, store.processing_key(STALE), "RIGHT", "LEFT")

    assert queue.requeue_unclaimed(scripts, task_id, STALE) is True
    assert queue.requeue_unclaimed(scripts, task_id, STALE) is False

    assert client.lrange(store.TASK_QUEUE, 0, -1) == [task_id]


def test_a_stale_id_of_a_finished_task_is_dropped_not_requeued(client, scripts):
    queue.submit(client, "add", 1, 2, accepted_by="node-1")
    claim = take(client, scripts, STALE)
    assert finish(client, scripts, claim) is True
    client.lpush(store.processing_key(STALE), claim.task_id)

    assert queue.requeue_unclaimed(scripts, claim.task_id, STALE) is False

    assert client.llen(store.TASK_QUEUE) == 0
    assert client.llen(store.processing_key(STALE)) == 0


def test_only_a_dead_letter_can_be_redriven(client, scripts):
    task_id = queue.submit(client, "add", 1, 2, accepted_by="node-1")
    take(client, scripts, STALE)

    assert queue.redrive_dead_letter(scripts, task_id) is False

    task = client.hgetall(store.task_key(task_id))
    assert (task["status"], task["attempts"]) == ("running", "1")
    assert client.llen(store.TASK_QUEUE) == 0


def test_a_dead_letter_whose_task_expired_is_dropped_not_redriven(client, scripts):
    client.lpush(store.DEAD_LETTER_QUEUE, "f" * 32)

    assert queue.redrive_dead_letter(scripts, "f" * 32) is False

    assert client.llen(store.DEAD_LETTER_QUEUE) == 0
    assert client.llen(store.TASK_QUEUE) == 0
    assert not client.exists(store.task_key("f" * 32))


# --- the reaper's lease-expiry guard ----------------------------------------------


def reaper_hand_back(scripts, claim):
    lost = queue.HandBack(
        claim.task_id, claim.worker_id, claim.attempt, "worker_lost", "lost", only_if_expired=True
    )
    policy = queue.RetryPolicy(max_attempts=5, base_backoff_seconds=0, result_ttl_seconds=60)
    return queue.retry(scripts, lost, policy, node_id="node-1")


def test_the_reaper_leaves_a_task_whose_holder_renewed_since_the_reaper_looked(client, scripts):
    queue.submit(client, "add", 1, 2, accepted_by="node-1")
    claim = take(client, scripts, STALE)  # a lease of a minute: renewed, valid

    assert reaper_hand_back(scripts, claim) is queue.RetryOutcome.RENEWED

    assert client.hget(store.task_key(claim.task_id), "status") == "running"
    assert client.lrange(store.processing_key(STALE), 0, -1) == [claim.task_id]
    assert fenced(client) == 0


def test_the_reaper_hands_back_a_task_whose_lease_ran_out(client, scripts):
    queue.submit(client, "add", 1, 2, accepted_by="node-1")
    claim = queue.take(client, scripts, STALE, lease_ms=1, block_seconds=0.1)
    wait_for(lambda: queue.find_lost(client, STALE), what="the 1 ms lease runs out")

    assert reaper_hand_back(scripts, claim) is queue.RetryOutcome.RETRY

    assert client.hget(store.task_key(claim.task_id), "status") == "pending"
    assert client.lrange(store.TASK_QUEUE, 0, -1) == [claim.task_id]
