"""One round trip per task, and batches, on a real Valkey.

A busy worker sends the outcome of the task it ran and the take of the next
in one script (``step.lua``); with ``WIZARD_BATCH=N`` it takes up to N at
once, each with its own lease and fenced write. Commands are counted with
``INFO commandstats``, which counts the commands a script runs too.
"""

from __future__ import annotations

import dataclasses

import pytest
import valkey
from valkey._parsers import _LibvalkeyParser, _RESP2Parser

from wizard import queue, store
from wizard.worker import Worker, WorkOutcome


@pytest.fixture
def scripts(client):
    return queue.Scripts(client)


def taking(batch: int = 1) -> queue.Taking:
    return queue.Taking("node-1", lease_ms=2000, block_seconds=0.1, result_ttl=60, batch=batch)


def submit(client, count: int) -> list[str]:
    return [queue.submit(client, "add", n, 1, accepted_by="node-1") for n in range(count)]


def commands(client) -> dict[str, int]:
    """Calls per command since the last CONFIG RESETSTAT (INFO commandstats)."""
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): found["calls"] for name, found in stats.items()}


def test_a_busy_step_records_one_task_and_takes_the_next_in_eight_commands(client, scripts):
    first, second = submit(client, 2)
    [claim] = queue.step(client, scripts, "node-1/w1", taking()).claims
    assert claim.task_id == first
    client.config_resetstat()

    done = queue.step(
        client,
        scripts,
        "node-1/w1",
        taking(),
        outcomes=[queue.Outcome(claim, result=1)],
        now_us=int(client.time()[0] * 1_000_000),
    )

    used = commands(client)
    used.pop("config|resetstat", None)
    used.pop("time", None)  # the test's own clock reading, before the step
    assert done.written == (True,) and [c.task_id for c in done.claims] == [second]
    assert used["evalsha"] == 1 and "blmove" not in used
    assert sum(used.values()) == 8, used  # EVALSHA, LREM HMGET HSET EXPIRE, LMOVE HMGET HSET
    assert queue.status(client, first).status is queue.TaskStatus.COMPLETE
    assert queue.status(client, second).status is queue.TaskStatus.RUNNING


def test_nothing_is_taken_while_a_task_runs(client, scripts):
    first, _ = submit(client, 2)

    [claim] = queue.step(client, scripts, "node-1/w1", taking()).claims

    assert client.lrange(store.processing_key("node-1/w1"), 0, -1) == [claim.task_id]
    assert client.llen(store.TASK_QUEUE) == 1


def test_an_empty_queue_blocks_after_recording(client, scripts):
    [task_id] = submit(client, 1)
    [claim] = queue.step(client, scripts, "node-1/w1", taking()).claims

    done = queue.step(
        client, scripts, "node-1/w1", taking(), outcomes=[queue.Outcome(claim, result=1)]
    )

    assert done.written == (True,) and done.claims == ()
    assert queue.status(client, task_id).result == 1
    assert client.llen(store.processing_key("node-1/w1")) == 0


def test_a_batch_claims_up_to_n_each_with_its_own_lease(client, scripts):
    ids = submit(client, 5)

    claims = queue.step(client, scripts, "node-1/w1", taking(batch=3)).claims

    assert [c.task_id for c in claims] == ids[:3]  # first in, first out
    assert sorted(client.lrange(store.processing_key("node-1/w1"), 0, -1)) == sorted(ids[:3])
    for claim in claims:
        fields = client.hgetall(store.task_key(claim.task_id))
        assert fields["status"] == "running" and fields["lease_owner"] == "node-1/w1"
        assert fields["attempts"] == "1" and int(fields["lease_expires"]) > 0
    assert client.llen(store.TASK_QUEUE) == 2


def test_a_batch_is_recorded_in_one_step_each_write_fenced_on_its_own(client, scripts):
    submit(client, 3)
    claims = queue.step(client, scripts, "node-1/w1", taking(batch=3)).claims
    # The middle task's lease went to another worker meanwhile.
    client.hset(store.task_key(claims[1].task_id), "lease_owner", "node-2/w1")
    outcomes = [queue.Outcome(c, result=n) for n, c in enumerate(claims)]

    done = queue.step(client, scripts, "node-1/w1", taking(batch=3), outcomes=outcomes)

    assert done.written == (True, False, True)
    statuses = [queue.status(client, c.task_id).status for c in claims]
    assert statuses == [queue.TaskStatus.COMPLETE, queue.TaskStatus.RUNNING] + [
        queue.TaskStatus.COMPLETE
    ]
    assert client.hget(store.stats_key("node-1"), "fenced_writes") == "1"
    assert client.llen(store.processing_key("node-1/w1")) == 0


def test_a_repeated_step_whose_reply_was_lost_writes_nothing_twice(client, scripts):
    submit(client, 1)
    [claim] = queue.step(client, scripts, "node-1/w1", taking()).claims
    outcome = queue.Outcome(claim, result=1)
    first = queue.step(client, scripts, "node-1/w1", taking(), outcomes=[outcome], take=False)

    again = queue.step(client, scripts, "node-1/w1", taking(), outcomes=[outcome], take=False)

    assert first.written == again.written == (True,)
    assert client.hget(store.stats_key("node-1"), "fenced_writes") is None


def test_a_claim_stamped_with_the_tracked_clock_uses_it_for_lease_and_start(client, scripts):
    [task_id] = submit(client, 1)
    seconds, micros = client.time()
    now_us = seconds * 1_000_000 + micros

    # The first claim blocks (empty outcomes), so it reads TIME itself; a
    # non-blocking claim needs an outcome first.
    [claim] = queue.step(client, scripts, "node-1/w1", taking()).claims
    [second] = submit(client, 1)
    outcome = queue.Outcome(claim, result=1)
    queue.step(client, scripts, "node-1/w1", taking(), outcomes=[outcome], now_us=now_us)

    fields = client.hgetall(store.task_key(second))
    assert fields["started_at"] == f"{seconds}.{micros:06d}"
    assert int(fields["lease_expires"]) == now_us // 1000 + 2000
    assert float(client.hget(store.task_key(task_id), "started_at")) > 0


def test_a_worker_in_batch_mode_runs_and_records_every_task_of_its_batch(settings, client):
    ids = submit(client, 4)
    worker = Worker(dataclasses.replace(settings, batch=4), "node-1/w1", client)

    assert worker.work_once() == WorkOutcome.COMPLETE

    assert [queue.status(client, i).result for i in ids] == [1, 2, 3, 4]
    assert worker.tasks_done == 4
    assert client.hget(store.stats_key("node-1"), "complete:add") == "4"


def test_the_counts_reach_valkey_with_the_heartbeat_not_with_each_task(settings, client):
    submit(client, 2)
    worker = Worker(settings, "node-1/w1", client)
    worker.beat()  # learns Valkey's clock, as it does before its first task

    worker.step()  # takes the first
    worker.step()  # records the first, takes the second
    assert client.hget(store.stats_key("node-1"), "complete:add") is None

    worker.beat()
    assert client.hget(store.stats_key("node-1"), "complete:add") == "1"
    durations = client.hgetall(store.duration_key("node-1"))
    buckets = {field: n for field, n in durations.items() if field != "add|sum"}
    assert list(buckets.values()) == ["1"] and float(durations["add|sum"]) >= 0


def test_counts_sent_again_after_a_lost_reply_are_added_once(client, scripts):
    # A flush whose reply is lost is sent again with the same token (what
    # metrics.Tally does after a timeout): Valkey applies it once.
    keys = [store.stats_key("node-1"), store.duration_key("node-1"), store.flushed_key("p1")]
    batch = {"counts": '{"complete:add": 3}', "buckets": '{"add|1": 3}', "sums": "{}"}
    assert scripts.flush(keys=keys, args={**batch, "token": "t1"}) == 2
    assert scripts.flush(keys=keys, args={**batch, "token": "t1"}) == -1
    assert client.hget(store.stats_key("node-1"), "complete:add") == "3"
    assert scripts.flush(keys=keys, args={**batch, "token": "t2"}) == 2
    assert client.hget(store.stats_key("node-1"), "complete:add") == "6"


def test_a_stopping_worker_records_what_it_ran_and_takes_nothing(settings, client):
    first, second = submit(client, 2)
    worker = Worker(settings, "node-1/w1", client)
    worker.step()
    worker.stop("test")

    assert worker.step() == [WorkOutcome.COMPLETE]

    assert queue.status(client, first).status is queue.TaskStatus.COMPLETE
    assert queue.status(client, second).status is queue.TaskStatus.PENDING
    assert client.llen(store.processing_key("node-1/w1")) == 0


def test_nodes_get_the_libvalkey_parser_and_the_queue_runs_without_it(valkey_server):
    # setup.cfg installs valkey[libvalkey]: the C reply parser is the default.
    assert valkey.connection.DefaultParser is _LibvalkeyParser
    plain = valkey.Valkey.from_url(
        valkey_server.url, decode_responses=True, parser_class=_RESP2Parser
    )
    try:
        plain.flushall()
        scripts = queue.Scripts(plain)
        [task_id] = submit(plain, 1)
        [claim] = queue.step(plain, scripts, "node-1/w1", taking()).claims
        outcome = queue.Outcome(claim, result=1)
        done = queue.step(plain, scripts, "node-1/w1", taking(), outcomes=[outcome])
    finally:
        plain.close()
    assert claim.task_id == task_id and done.written == (True,)


def test_a_worker_asked_to_stop_gives_back_the_rest_of_its_batch_untouched(settings, client):
    ids = submit(client, 3)
    worker = Worker(dataclasses.replace(settings, batch=3), "node-1/w1", client)
    claims = queue.step(client, worker.scripts, "node-1/w1", worker.taking).claims
    worker.stop("test")

    worker._run_all(claims)

    for task_id in ids:
        task = queue.status(client, task_id)
        assert task.status is queue.TaskStatus.PENDING and task.attempts == 0
        assert task.handled_by is None and task.started_at is None
    assert client.lrange(store.TASK_QUEUE, 0, -1) == ids[::-1]  # oldest next again
    assert client.llen(store.processing_key("node-1/w1")) == 0


def test_release_leaves_a_task_whose_lease_was_lost(client, scripts):
    submit(client, 1)
    [claim] = queue.step(client, scripts, "node-1/w1", taking()).claims
    client.hset(store.task_key(claim.task_id), "lease_owner", "node-2/w1")

    assert queue.release(scripts, "node-1/w1", [claim]) == 0
    assert queue.status(client, claim.task_id).status is queue.TaskStatus.RUNNING


def test_release_leaves_a_task_of_another_attempt_or_already_ended(client, scripts):
    submit(client, 2)
    first, second = queue.step(client, scripts, "node-1/w1", taking(batch=2)).claims
    client.hset(store.task_key(first.task_id), "attempts", "2")  # reaped and taken again
    client.hset(store.task_key(second.task_id), "status", "complete")

    assert queue.release(scripts, "node-1/w1", [first, second]) == 0
    assert queue.status(client, first.task_id).status is queue.TaskStatus.RUNNING
    assert queue.status(client, second.task_id).status is queue.TaskStatus.COMPLETE
