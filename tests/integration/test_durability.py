"""Durability promises: a full Valkey says 503 (never 202), eviction is
refused at /readyz, a durable ack waits for the AOF, results expire."""

from __future__ import annotations

import dataclasses

import pytest
import valkey

from tests.support import call
from wizard import queue, store
from wizard.api import make_app
from wizard.cluster import EmbeddedValkey, free_port
from wizard.worker import Worker


@pytest.fixture
def own_valkey(tmp_path):
    """A Valkey of this test's own, so its configuration can be changed."""
    server = EmbeddedValkey(free_port(), tmp_path)
    server.start()
    yield server
    server.stop()


def test_a_full_valkey_answers_503_and_stores_nothing(settings, own_valkey):
    client = valkey.Valkey.from_url(own_valkey.url, decode_responses=True)
    client.config_set("maxmemory", "1")  # every write now fails with OOM
    app = make_app(dataclasses.replace(settings, valkey_url=own_valkey.url))

    response = call(app, "POST", "/task", query={"a": 1, "b": 2})

    assert response.status == 503
    assert response.headers["Content-Type"] == "application/problem+json"
    assert "Retry-After" in response.headers
    assert "out of memory" in response.json()["detail"] or "refused" in response.json()["detail"]
    client.config_set("maxmemory", "0")
    assert client.llen(store.TASK_QUEUE) == 0 and client.keys("task:*") == []


def test_readyz_fails_when_valkey_may_evict_keys(settings, own_valkey):
    client = valkey.Valkey.from_url(own_valkey.url, decode_responses=True)
    app = make_app(dataclasses.replace(settings, valkey_url=own_valkey.url, workers=0))
    assert call(app, "GET", "/readyz").status == 200

    client.config_set("maxmemory-policy", "allkeys-lru")
    response = call(app, "GET", "/readyz")

    assert response.status == 503
    assert "noeviction" in response.json()["detail"]


def test_a_durable_ack_waits_for_the_append_only_file(settings, own_valkey):
    durable = dataclasses.replace(settings, valkey_url=own_valkey.url, durable_ack=True)
    app = make_app(durable)

    assert call(app, "POST", "/task", query={"a": 1, "b": 2}).status == 202

    client = valkey.Valkey.from_url(own_valkey.url, decode_responses=True)
    client.config_set("appendonly", "no")
    refused = call(app, "POST", "/task", query={"a": 1, "b": 2})
    assert refused.status == 503
    assert "Retry-After" in refused.headers


def test_finished_tasks_expire_after_the_result_ttl(settings, client):
    short = dataclasses.replace(settings, result_ttl=7)
    task_id = queue.submit(client, "add", 1, 2, accepted_by="node-1")
    pending_ttl = client.ttl(store.task_key(task_id))

    Worker(short, "node-1/w1", client).work_once()

    assert pending_ttl == -1, "a pending task must never expire"
    assert 0 < client.ttl(store.task_key(task_id)) <= 7
