"""The task's life on a real Valkey: submit, take, finish, fencing, retries."""

from __future__ import annotations

import json

import pytest

from wizard import queue, store


@pytest.fixture
def scripts(client):
    return queue.Scripts(client)


def take(client, scripts, worker_id="node-1/w1", fetch="blmove"):
    return queue.take(client, scripts, worker_id, lease_ms=2000, block_seconds=0.1, fetch=fetch)


def hand_back(client, scripts, claim, *, reason, max_attempts=3, delay_seconds=0):
    """Give ``claim``'s task back, as its worker (or the reaper) would."""
    hand_back = queue.HandBack(
        claim.task_id,
        claim.worker_id,
        claim.attempt,
        reason,
        f"{reason} (test)",
        delay_seconds=delay_seconds,
    )
    policy = queue.RetryPolicy(
        max_attempts=max_attempts, base_backoff_seconds=0.5, result_ttl_seconds=60
    )
    return queue.retry(scripts, hand_back, policy, node_id="node-1")


def finish(client, scripts, claim, **outcome):
    return queue.finish(
        client,
        scripts,
        claim,
        node_id="node-1",
        result_ttl=60,
        **outcome,
    )


def test_submit_writes_the_hash_and_pushes_the_id_in_one_transaction(client):
    task_id = queue.submit(client, "add", 1, 2.5, accepted_by="node-1")

    fields = client.hgetall(store.task_key(task_id))
    assert fields["status"] == "pending"
    assert fields["accepted_by"] == "node-1"
    assert json.loads(fields["a"]) == 1 and json.loads(fields["b"]) == 2.5
    assert client.lrange(store.TASK_QUEUE, 0, -1) == [task_id]
    assert client.lrange(store.RECENT_TASKS, 0, -1) == [task_id]


def test_take_moves_the_id_into_the_workers_processing_list_and_leases_it(client, scripts):
    task_id = queue.submit(client, "add", 1, 2, accepted_by="node-1")

    claim = take(client, scripts)

    assert claim.task_id == task_id and claim.attempt == 1
    assert client.lrange(store.processing_key("node-1/w1"), 0, -1) == [task_id]
    fields = client.hgetall(store.task_key(task_id))
    assert fields["status"] == "running"
    assert fields["lease_owner"] == "node-1/w1"
    assert int(fields["lease_expires"]) > 0


def test_take_returns_none_when_nothing_arrives_in_time(client, scripts):
    assert take(client, scripts) is None


def test_the_queue_is_first_in_first_out(client, scripts):
    ids = [queue.submit(client, "add", n, 0, accepted_by="node-1") for n in range(3)]

    taken = [take(client, scripts).task_id for _ in ids]

    assert taken == ids


def test_finish_records_the_result_and_leaves_the_processing_list_atomically(client, scripts):
    task_id = queue.submit(client, "add", 1, 2, accepted_by="node-1")
    claim = take(client, scripts)

    assert finish(client, scripts, claim, result=3) is True

    task = queue.status(client, task_id)
    assert task.status is queue.TaskStatus.COMPLETE
    assert task.result == 3 and isinstance(task.result, int)
    assert task.handled_by == "node-1/w1"
    assert task.finished_at >= task.started_at >= task.created_at
    assert client.llen(store.processing_key("node-1/w1")) == 0
    assert 0 < client.ttl(store.task_key(task_id)) <= 60


def test_a_permanent_error_ends_the_task_failed_with_its_message(client, scripts):
    task_id = queue.submit(client, "divide", 1, 0, accepted_by="node-1")
    claim = take(client, scripts)

    finish(client, scripts, claim, error="division by zero")

    task = queue.status(client, task_id)
    assert task.status is queue.TaskStatus.FAILED
    assert task.error == "division by zero"
    assert "result" not in task.to_json()


def test_a_late_write_from_a_worker_that_lost_its_lease_is_refused_and_counted(client, scripts):
    task_id = queue.submit(client, "add", 1, 2, accepted_by="node-1")
    first = take(client, scripts, "node-1/w1")
    # The first worker is presumed lost: its task goes back to the queue.
    outcome = hand_back(
        client, scripts, first, reason="worker_lost", max_attempts=3, delay_seconds=0
    )
    assert outcome == "retry"
    second = take(client, scripts, "node-2/w1")
    assert second.attempt == 2
    assert finish(client, scripts, second, result=3) is True

    assert finish(client, scripts, first, result=999) is False

    task = queue.status(client, task_id)
    assert task.result == 3 and task.handled_by == "node-2/w1" and task.attempts == 2
    assert client.hget(store.stats_key("node-1"), "fenced_writes") == "1"


def test_a_task_that_uses_up_its_attempts_is_dead_lettered(client, scripts):
    task_id = queue.submit(client, "add", 1, 2, accepted_by="node-1")
    for _ in range(2):
        claim = take(client, scripts)
        outcome = hand_back(
            client, scripts, claim, reason="timeout", max_attempts=2, delay_seconds=0
        )
    assert outcome == "dead"
    assert client.lrange(store.DEAD_LETTER_QUEUE, 0, -1) == [task_id]
    task = queue.status(client, task_id)
    assert task.status is queue.TaskStatus.FAILED and task.reason == "timeout"
    assert 0 < client.ttl(store.task_key(task_id)) <= queue.DEAD_LETTER_TTL


def test_a_retry_with_a_delay_waits_in_the_delayed_set_until_promoted(client, scripts):
    task_id = queue.submit(client, "add", 1, 2, accepted_by="node-1")
    claim = take(client, scripts)
    hand_back(client, scripts, claim, reason="timeout", max_attempts=3, delay_seconds=0)
    # No delay: straight back to the front of the queue.
    assert client.lrange(store.TASK_QUEUE, 0, -1) == [task_id]

    claim = take(client, scripts)
    hand_back(client, scripts, claim, reason="timeout", max_attempts=3, delay_seconds=3600)
    assert client.zscore(store.DELAYED_QUEUE, task_id) is not None
    assert queue.promote_due(scripts) == 0
    client.zadd(store.DELAYED_QUEUE, {task_id: 1})
    assert queue.promote_due(scripts) == 1
    assert client.lrange(store.TASK_QUEUE, 0, -1) == [task_id]


def test_the_brpop_consumer_keeps_no_processing_list(client, scripts):
    queue.submit(client, "add", 1, 2, accepted_by="node-1")

    claim = take(client, scripts, fetch="brpop")

    assert claim is not None
    assert client.exists(store.processing_key("node-1/w1")) == 0


def test_a_finished_id_found_in_the_queue_again_is_dropped_not_rerun(client, scripts):
    task_id = queue.submit(client, "add", 1, 2, accepted_by="node-1")
    finish(client, scripts, take(client, scripts), result=3)
    client.rpush(store.TASK_QUEUE, task_id)

    assert take(client, scripts, "node-2/w1") is None
    assert client.llen(store.processing_key("node-2/w1")) == 0
    assert queue.status(client, task_id).attempts == 1


def test_dead_letters_can_be_redriven_or_deleted(client, scripts):
    ids = []
    for _ in range(2):
        task_id = queue.submit(client, "add", 1, 2, accepted_by="node-1")
        claim = take(client, scripts)
        hand_back(client, scripts, claim, reason="worker_lost", max_attempts=1, delay_seconds=0)
        ids.append(task_id)

    assert queue.redrive_dead_letter(scripts, ids[0]) is True
    assert queue.delete_dead_letter(scripts, ids[1]) is True

    assert client.llen(store.DEAD_LETTER_QUEUE) == 0
    task = queue.status(client, ids[0])
    assert task.status is queue.TaskStatus.PENDING and task.attempts == 0
    assert client.ttl(store.task_key(ids[0])) == -1
    assert queue.status(client, ids[1]) is None
    assert queue.redrive_dead_letter(scripts, ids[1]) is False
    assert queue.delete_dead_letter(scripts, ids[0]) is False


def test_status_reads_never_write(client, scripts):
    task_id = queue.submit(client, "add", 1, 2, accepted_by="node-1")
    before = {key: client.dump(key) for key in client.keys("*")}

    queue.status(client, task_id)
    queue.recent(client, 10)
    queue.counts(client)

    assert {key: client.dump(key) for key in client.keys("*")} == before


def test_a_task_completed_on_retry_shows_its_result_not_the_earlier_error(client, scripts):
    task_id = queue.submit(client, "add", 1, 2, accepted_by="node-1")
    lost = take(client, scripts)
    hand_back(client, scripts, lost, reason="worker_lost", max_attempts=3, delay_seconds=0)

    finish(client, scripts, take(client, scripts), result=3)

    body = queue.status(client, task_id).to_json()
    assert body["result"] == 3 and body["attempts"] == 2
    assert "error" not in body and "reason" not in body


def test_take_still_claims_after_valkey_forgot_its_scripts(client, scripts):
    task_id = queue.submit(client, "add", 1, 2, accepted_by="node-1")
    client.script_flush()  # what a restart of Valkey does to loaded scripts

    claim = take(client, scripts)

    assert claim.task_id == task_id and claim.attempt == 1
    assert client.lrange(store.processing_key("node-1/w1"), 0, -1) == [task_id]


def test_an_idle_take_claims_an_id_left_pending_at_the_head_of_its_list(client, scripts):
    # A previous process with this worker id died between its move and claim.
    task_id = queue.submit(client, "add", 1, 2, accepted_by="node-1")
    client.lmove(store.TASK_QUEUE, store.processing_key("node-1/w1"), "RIGHT", "LEFT")

    claim = take(client, scripts)

    assert claim.task_id == task_id


def test_an_idle_take_leaves_a_running_task_in_its_list_for_the_reaper(client, scripts):
    task_id = queue.submit(client, "add", 1, 2, accepted_by="node-1")
    take(client, scripts)  # claimed by a process that then died

    assert take(client, scripts) is None
    assert client.lrange(store.processing_key("node-1/w1"), 0, -1) == [task_id]


def test_repeating_a_finish_whose_reply_was_lost_is_not_a_fenced_write(client, scripts):
    task_id = queue.submit(client, "add", 1, 2, accepted_by="node-1")
    claim = take(client, scripts)
    assert finish(client, scripts, claim, result=3) is True

    assert finish(client, scripts, claim, result=3) is True

    assert client.hget(store.stats_key("node-1"), "fenced_writes") is None
    assert queue.status(client, task_id).result == 3
    assert queue.status(client, task_id).result == 3
