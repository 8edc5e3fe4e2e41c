"""Membership on a real Valkey: a beat writes the card in both places, who
is alive is read from the heartbeat keys, a worker that signs off leaves the
membership, and workers silent for STALE_AFTER (five minutes) are forgotten
(by the scheduler's round too), silent ones at once by a new cluster."""

from __future__ import annotations

import json
import time

from wizard import membership, store
from wizard.scheduler import Scheduler


def card(worker_id: str, at: float, task_id: str | None = None) -> membership.WorkerCard:
    node = worker_id.partition("/")[0]
    return membership.WorkerCard(
        worker_id, node=node, pid=4242, started=at - 5, at=at, task_id=task_id
    )


def test_worker_ids_are_node_slash_w_and_a_number():
    assert membership.node_worker_ids("node-2", 3) == ["node-2/w1", "node-2/w2", "node-2/w3"]


def test_a_beat_stores_the_card_under_its_heartbeat_key_and_in_the_registry(client):
    now = time.time()
    valkey_us = membership.beat(client, card("node-1/w1", now, task_id="ab" * 16), ttl_ms=5000)

    seconds, micros = client.time()
    assert 0 <= seconds * 1_000_000 + micros - valkey_us < 60_000_000
    stored = json.loads(client.get(store.heartbeat_key("node-1/w1")))
    assert stored == {
        "node": "node-1",
        "pid": 4242,
        "started": now - 5,
        "at": now,
        "tasks_done": 0,
        "task_id": "ab" * 16,
    }
    assert json.loads(client.hget(store.WORKER_REGISTRY, "node-1/w1")) == stored
    assert 0 < client.pttl(store.heartbeat_key("node-1/w1")) <= 5000
    assert membership.cards(client) == [card("node-1/w1", now, task_id="ab" * 16)]


def test_alive_follows_the_heartbeat_key_and_sign_off_removes_it(client):
    membership.beat(client, card("node-1/w1", time.time()), ttl_ms=5000)
    membership.beat(client, card("node-1/w2", time.time()), ttl_ms=5000)

    membership.sign_off(client, "node-1/w2")

    assert membership.alive(client, ["node-1/w1", "node-1/w2", "node-9/w1"]) == [
        True,
        False,
        False,
    ]
    assert membership.registered(client) == ["node-1/w1"], "a clean stop leaves the membership"


def test_workers_silent_for_longer_than_the_stale_limit_are_forgotten(client):
    now = time.time()
    old = now - membership.STALE_AFTER - 1
    membership.beat(client, card("node-1/w1", now), ttl_ms=5000)
    membership.beat(client, card("node-2/w1", old), ttl_ms=5000)

    assert membership.forget_stale(client, now) == ["node-2/w1"]
    assert membership.registered(client) == ["node-1/w1"]


def test_the_leading_scheduler_forgets_stale_workers_in_its_round(settings, client):
    old = time.time() - membership.STALE_AFTER - 1
    membership.beat(client, card("node-2/w1", old), ttl_ms=5000)

    assert Scheduler(settings, client).tick()["leader"] is True

    assert membership.registered(client) == []


def test_a_worker_that_signs_off_leaves_the_membership_at_once(client):
    membership.beat(client, card("lossy/w1", time.time()), ttl_ms=5000)

    membership.sign_off(client, "lossy/w1")

    assert membership.registered(client) == []
    assert membership.cards(client) == []


def test_a_dead_worker_is_forgotten_within_five_minutes(client):
    assert membership.STALE_AFTER == 300.0
    now = time.time()
    membership.beat(client, card("node-2/w1", now - membership.STALE_AFTER + 1), ttl_ms=1)

    assert membership.forget_stale(client, now) == []
    assert membership.forget_stale(client, now + 2) == ["node-2/w1"]


def test_a_new_cluster_forgets_every_worker_without_a_heartbeat(client):
    now = time.time()
    membership.beat(client, card("node-1/w1", now), ttl_ms=60_000)
    membership.beat(client, card("lossy/w1", now), ttl_ms=60_000)
    client.delete(store.heartbeat_key("lossy/w1"))  # it died: its key expired

    assert membership.forget_silent(client) == ["lossy/w1"]
    assert membership.registered(client) == ["node-1/w1"]


def test_a_node_that_stops_cleanly_leaves_the_process_list(client):
    membership.record_process(client, "lossy/api", pid=41, node="lossy", role="api")
    membership.record_process(client, "lossy/w1", pid=42, node="lossy", role="worker")
    membership.record_process(client, "nginx", pid=7, node="", role="gateway")

    assert sorted(membership.forget_node_processes(client, "lossy")) == ["lossy/api", "lossy/w1"]
    assert [p["name"] for p in membership.process_table(client)] == ["nginx"]
