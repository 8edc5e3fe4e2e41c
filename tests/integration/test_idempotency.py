"""POST /task with an Idempotency-Key: at most one task per key."""

from __future__ import annotations

import dataclasses
import threading

from tests.support import call, wait_for
from wizard import store
from wizard.api import make_app
from wizard.identity import UNKNOWN
from wizard.worker import Worker

#: Who the client is in these calls: wsgiref's test environ sets no address.
CLIENT = UNKNOWN


def post(app, key, a=1, b=2):
    return call(app, "POST", "/task", query={"a": a, "b": b}, headers={"Idempotency-Key": key})


def test_repeating_a_request_with_the_same_key_returns_the_first_task(settings, client):
    app = make_app(settings)

    first = post(app, "order-42")
    again = post(app, "order-42")

    assert first.status == again.status == 202
    assert again.json()["task_id"] == first.json()["task_id"]
    assert again.headers["Location"] == first.headers["Location"]
    assert client.llen(store.TASK_QUEUE) == 1


def test_the_key_holds_across_nodes_and_names_the_node_that_accepted(settings, client):
    node_2 = make_app(dataclasses.replace(settings, node_id="node-2"))
    first = post(make_app(settings), "k-1")

    again = post(node_2, "k-1")

    assert again.json()["task_id"] == first.json()["task_id"]
    assert again.json()["accepted_by"] == "node-1"


def test_concurrent_requests_with_one_key_create_one_task(settings, client):
    apps = [make_app(settings) for _ in range(8)]
    answers = []

    def send(app):
        answers.append(post(app, "race"))

    threads = [threading.Thread(target=send, args=(app,)) for app in apps]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(answers) == len(apps), "a request raised instead of answering"
    assert [a.status for a in answers] == [202] * len(apps)
    assert len({a.json()["task_id"] for a in answers}) == 1
    assert client.llen(store.TASK_QUEUE) == 1


def test_reusing_a_key_for_other_input_is_a_422_and_stores_nothing(settings, client):
    app = make_app(settings)
    post(app, "k-2", a=1)

    clash = post(app, "k-2", a=5)

    assert clash.status == 422
    assert clash.headers["Content-Type"] == "application/problem+json"
    assert "other input" in clash.json()["detail"]
    assert client.llen(store.TASK_QUEUE) == 1


def test_a_malformed_key_is_a_400(settings, client):
    response = post(make_app(settings), "no spaces please")

    assert response.status == 400
    assert "Idempotency-Key" in response.json()["detail"]
    assert client.dbsize() == 0


def test_different_keys_make_different_tasks(settings, client):
    app = make_app(settings)

    ids = {post(app, f"k-{n}").json()["task_id"] for n in range(3)}

    assert len(ids) == 3


def test_an_empty_key_is_a_400_not_a_new_task_each_time(settings, client):
    response = post(make_app(settings), "")

    assert response.status == 400
    assert client.dbsize() == 0


def test_a_key_expires_no_later_than_its_task_and_is_fresh_again_after(settings, client):
    short = dataclasses.replace(settings, result_ttl=2)
    app = make_app(short)
    first = post(app, "short-lived").json()["task_id"]
    assert Worker(short, "node-1/w1").work_once() == "complete"
    key, task = store.idempotency_key(CLIENT, "short-lived"), store.task_key(first)
    assert 0 < client.pttl(key) <= client.pttl(task)

    wait_for(lambda: not client.exists(task), timeout=10, what="the task expires")
    assert not client.exists(key), "the key outlived its task"

    again = post(app, "short-lived")
    assert again.status == 202
    assert again.json()["task_id"] != first
    assert client.llen(store.TASK_QUEUE) == 1


def test_a_key_whose_task_is_gone_creates_a_new_task(settings, client):
    app = make_app(settings)
    first = post(app, "orphaned-key").json()["task_id"]
    client.delete(store.task_key(first))

    again = post(app, "orphaned-key")

    assert again.status == 202
    second = again.json()["task_id"]
    assert second != first
    assert client.get(store.idempotency_key(CLIENT, "orphaned-key")) == second
    assert post(app, "orphaned-key").json()["task_id"] == second
