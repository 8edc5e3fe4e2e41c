"""Rate limiting in Valkey (GCRA), shared by every node."""

from __future__ import annotations

import dataclasses

from tests.support import call
from wizard import store
from wizard.api import make_app
from wizard.ratelimit import RateLimiter


def test_a_burst_passes_then_the_next_request_must_wait(client):
    limiter = RateLimiter(client, per_second=1, burst=3)

    waits = [limiter.retry_after("10.0.0.1") for _ in range(4)]

    assert waits[:3] == [0.0, 0.0, 0.0]
    assert 0 < waits[3] <= 1.0


def test_each_client_has_its_own_limit(client):
    limiter = RateLimiter(client, per_second=1, burst=1)

    assert limiter.retry_after("10.0.0.1") == 0.0
    assert limiter.retry_after("10.0.0.2") == 0.0
    assert limiter.retry_after("10.0.0.1") > 0


def test_the_limit_is_shared_by_every_node_and_answers_429_with_retry_after(settings, client):
    limited = dataclasses.replace(settings, rate_limit=1, rate_burst=2)
    node_1 = make_app(limited)
    node_2 = make_app(dataclasses.replace(limited, node_id="node-2"))
    headers = {"X-Forwarded-For": "198.51.100.4"}

    first = call(node_1, "POST", "/task", query={"a": 1, "b": 2}, headers=headers)
    second = call(node_2, "POST", "/task", query={"a": 1, "b": 2}, headers=headers)
    third = call(node_1, "GET", "/add", query={"a": 1, "b": 2}, headers=headers)

    assert (first.status, second.status) == (202, 202)
    assert third.status == 429
    assert third.headers["Content-Type"] == "application/problem+json"
    assert int(third.headers["Retry-After"]) >= 1
    assert "198.51.100.4" in third.json()["detail"]
    assert client.llen(store.TASK_QUEUE) == 2


def test_reads_are_never_limited(settings, client):
    limited = dataclasses.replace(settings, rate_limit=1, rate_burst=1)
    app = make_app(limited)

    statuses = {call(app, "GET", "/whoami").status for _ in range(5)}

    assert statuses == {200}


def test_without_a_rate_limit_nothing_is_stored(settings, client):
    app = make_app(settings)

    call(app, "POST", "/task", query={"a": 1, "b": 2})

    assert client.keys(store.RATE_LIMIT_PREFIX + "*") == []
