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
    # Through a gateway in a trusted private network, as under compose.
    via = {"headers": {"X-Forwarded-For": "198.51.100.4"}, "remote_addr": "172.18.0.2"}

    first = call(node_1, "POST", "/task", query={"a": 1, "b": 2}, **via)
    second = call(node_2, "POST", "/task", query={"a": 1, "b": 2}, **via)
    third = call(node_1, "GET", "/add", query={"a": 1, "b": 2}, **via)

    assert (first.status, second.status) == (202, 202)
    assert third.status == 429
    assert third.headers["Content-Type"] == "application/problem+json"
    assert int(third.headers["Retry-After"]) >= 1
    assert "198.51.100.4" in third.json()["detail"]
    assert client.llen(store.TASK_QUEUE) == 2
    assert client.exists(store.rate_limit_key("198.51.100.4"))


def test_answers_carry_the_ietf_ratelimit_headers(settings, client):
    limited = dataclasses.replace(settings, rate_limit=1, rate_burst=3)
    app = make_app(limited)

    answers = [
        call(app, "POST", "/task", query={"a": 1, "b": 2}, remote_addr="203.0.113.5")
        for _ in range(4)
    ]

    assert [a.status for a in answers] == [202, 202, 202, 429]
    policies = {a.headers["RateLimit-Policy"] for a in answers}
    assert policies == {'"work";q=3;w=3'}
    remaining = [a.headers["RateLimit"].split(";")[1] for a in answers]
    assert remaining == ["r=2", "r=1", "r=0", "r=0"]
    assert all(a.headers["RateLimit"].startswith('"work";r=') for a in answers)
    reset = int(answers[-1].headers["RateLimit"].rsplit(";t=", 1)[1])
    assert 1 <= reset <= 3
    assert int(answers[-1].headers["Retry-After"]) >= 1


def test_a_direct_client_cannot_pick_its_budget_with_forwarded_headers(settings, client):
    app = make_app(dataclasses.replace(settings, rate_limit=1, rate_burst=1))
    attacker = {"remote_addr": "203.0.113.66", "query": {"a": 1, "b": 2}}

    first = call(app, "POST", "/task", headers={"X-Forwarded-For": "1.1.1.1"}, **attacker)
    again = call(app, "POST", "/task", headers={"X-Real-IP": "2.2.2.2"}, **attacker)

    assert (first.status, again.status) == (202, 429)
    assert client.keys(store.RATE_LIMIT_PREFIX + "*") == [store.rate_limit_key("203.0.113.66")]


def test_reads_are_never_limited(settings, client):
    limited = dataclasses.replace(settings, rate_limit=1, rate_burst=1)
    app = make_app(limited)

    statuses = {call(app, "GET", "/whoami").status for _ in range(5)}

    assert statuses == {200}


def test_without_a_rate_limit_nothing_is_stored(settings, client):
    app = make_app(settings)

    call(app, "POST", "/task", query={"a": 1, "b": 2})

    assert client.keys(store.RATE_LIMIT_PREFIX + "*") == []


def test_a_burst_of_n_means_exactly_n_accepted_back_to_back_then_429(settings, client):
    # One request per 1000 s: no budget can come back during the test, so
    # what passes is the burst alone (WIZARD_RATE_BURST=5 -> 5, not 6).
    app = make_app(dataclasses.replace(settings, rate_limit=0.001, rate_burst=5))

    answers = [
        call(app, "POST", "/task", query={"a": 1, "b": 2}, remote_addr="203.0.113.50")
        for _ in range(7)
    ]

    assert [a.status for a in answers] == [202] * 5 + [429] * 2
    assert {a.headers["RateLimit-Policy"] for a in answers} == {'"work";q=5;w=5000'}
    remaining = [a.headers["RateLimit"].split(";")[1] for a in answers]
    assert remaining == ["r=4", "r=3", "r=2", "r=1", "r=0", "r=0", "r=0"]
    assert client.llen(store.TASK_QUEUE) == 5


def test_the_budget_comes_back_one_request_per_interval_not_all_at_once(client):
    # A burst of 5 at one per 100 s: 5 pass at once; a 6th passes once one
    # interval has gone by (here: the stored arrival time aged by 100 s), so
    # a loop that is slower than the rate gets more than the burst.
    limiter = RateLimiter(client, per_second=0.01, burst=5)
    assert [limiter.check("10.0.0.9").allowed for _ in range(6)] == [True] * 5 + [False]

    key = store.rate_limit_key("10.0.0.9")
    client.set(key, float(client.get(key)) - 100_000)

    assert [limiter.check("10.0.0.9").allowed for _ in range(2)] == [True, False]
