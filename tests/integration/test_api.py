"""The HTTP API of one node, called in-process (a wsgiref environ) on a real
Valkey: every endpoint's happy path, the problem document for each kind of
bad input, and the promises of the contract (status reads never write, a
task can be read from any node, no response carries NaN or Infinity).

Tasks are finished by a real :class:`~wizard.worker.Worker` driven one step
at a time in this process (``work_once``).
"""

from __future__ import annotations

import dataclasses
import json
import time
from urllib.parse import urlencode

import pytest
import valkey

from tests.support import call
from wizard import queue, store
from wizard.api import make_app
from wizard.router import MAX_BODY_BYTES, PROBLEM_BASE
from wizard.worker import Worker

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
UNKNOWN_ID = "0" * 32


@pytest.fixture
def app(settings):
    """The WSGI app of node-1, with its own Valkey client."""
    application = make_app(settings)
    yield application
    application.client.close()


@pytest.fixture
def other_app(settings):
    """The WSGI app of another node, node-2, on the same Valkey."""
    application = make_app(dataclasses.replace(settings, node_id="node-2"))
    yield application
    application.client.close()


@pytest.fixture
def worker(settings):
    """A real worker of node-1, driven one step at a time."""
    consumer = Worker(settings, "node-1/w1")
    yield consumer
    consumer.client.close()


def strict_json(body: bytes):
    """Parse a body as RFC 8259 JSON: a bare NaN or Infinity fails the test."""

    def refuse(name):
        raise AssertionError(f"{name} in a response body: {body!r}")

    return json.loads(body, parse_constant=refuse)


def get(app, path, **query):
    return call(app, "GET", path, query=query)


def post_task(app, **fields):
    """POST /task with the fields in the query string, as curl -X POST does."""
    return call(app, "POST", "/task", query=fields)


def accepted(response) -> str:
    """Check a 202 and return the task id."""
    assert response.status == 202, response.body
    return strict_json(response.body)["task_id"]


def finish_all(worker, count: int) -> list[str]:
    """Let ``worker`` take and finish ``count`` tasks; their outcomes."""
    outcomes = [worker.work_once() for _ in range(count)]
    assert None not in outcomes, outcomes
    return outcomes


def task_keys(client) -> list[str]:
    return list(client.scan_iter(match=store.TASK_PREFIX + "*"))


def everything_in(url: str) -> dict:
    """Every key's type and serialized value (DUMP) and its TTL, bytes."""
    raw = valkey.Valkey.from_url(url)
    try:
        return {key: (raw.type(key), raw.dump(key), raw.pttl(key)) for key in raw.scan_iter()}
    finally:
        raw.close()


# --- happy paths ----------------------------------------------------------


def test_the_dashboard_is_served_as_html(app):
    for path in ("/", "/static/index.html"):
        response = get(app, path)
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/html; charset=utf-8"
        assert b"<html" in response.body.lower()


def test_whoami_names_the_node_host_process_and_version(app):
    response = get(app, "/whoami")
    assert response.status == 200
    body = strict_json(response.body)
    assert body["node"] == "node-1"
    assert body["handled_by"] == "node-1"
    assert body["hostname"]
    assert isinstance(body["pid"], int)
    assert body["version"]


def test_healthz_says_the_process_is_alive(app):
    response = get(app, "/healthz")
    assert response.status == 200
    assert strict_json(response.body)["status"] == "ok"


def test_valkey_test_writes_a_value_and_reads_it_back(app, client):
    response = get(app, "/valkey_test")
    assert response.status == 200
    body = strict_json(response.body)
    assert body["valkey_ok"] is True
    assert body["read_value"].startswith("hello from node-1")
    assert body["round_trip_ms"] >= 0
    assert client.get("valkey_test:node-1") == body["read_value"]


@pytest.mark.parametrize(
    "a, b, total",
    [("1", "2", 3), ("1.5", "2", 3.5), ("-4", "4", 0), ("1e3", "1", 1001.0)],
)
def test_add_answers_the_sum_synchronously_keeping_the_kind_of_number(app, a, b, total):
    response = get(app, "/add", a=a, b=b)
    assert response.status == 200
    body = strict_json(response.body)
    assert body["sum"] == total and type(body["sum"]) is type(total)
    assert body["handled_by"] == "node-1"
    assert body["elapsed_ms"] >= 0


@pytest.mark.parametrize(
    "a, b, operation",
    [("1e15", "1e15", "multiply"), ("-1e15", "1e15", "multiply"), ("1e15", "1e-300", "divide")],
)
def test_no_answer_ever_carries_nan_or_infinity(app, worker, a, b, operation):
    task_id = accepted(post_task(app, a=a, b=b, operation=operation))
    finish_all(worker, 1)
    responses = [
        get(app, f"/tasks/{task_id}/status"),
        get(app, "/tasks"),
        get(app, "/add", a=a, b=b),
        get(app, "/cluster"),
    ]
    for response in responses:
        strict_json(response.body)
        assert b"NaN" not in response.body and b"Infinity" not in response.body


def test_a_synchronous_addition_past_its_time_limit_stops_and_frees_its_slot(settings):
    # 60 s of work against a 0.2 s limit, on one slot: without the limit the
    # first call would run for a minute (the test's time limit fails it);
    # without freeing the slot the second would be refused as "already runs".
    slow = dataclasses.replace(settings, work_seconds=60.0, sync_timeout=0.2, sync_slots=1)
    application = make_app(slow)
    try:
        for _ in range(2):
            response = get(application, "/add", a="1", b="2")
            assert response.status == 503
            problem = strict_json(response.body)
            assert "did not finish within 0.2 s" in problem["detail"]
            assert "POST /task" in problem["detail"]
            assert response.headers["Retry-After"] == "60"
    finally:
        application.client.close()


def test_add_writes_nothing_to_valkey(app, client):
    get(app, "/add", a="1", b="2")
    assert client.dbsize() == 0


def test_a_task_posted_in_the_query_string_is_accepted_with_a_location(app, client):
    response = post_task(app, a="1", b="2", operation="add")
    task_id = accepted(response)
    body = strict_json(response.body)
    assert queue.is_task_id(task_id)
    assert body["status"] == "pending"
    assert body["operation"] == "add"
    assert body["accepted_by"] == "node-1"
    assert body["status_url"] == f"/tasks/{task_id}/status"
    assert response.headers["Location"] == body["status_url"]
    assert client.lrange(store.TASK_QUEUE, 0, -1) == [task_id]
    stored = client.hgetall(store.task_key(task_id))
    assert stored["status"] == "pending"
    assert stored["accepted_by"] == "node-1"


def test_a_task_posted_as_a_form_is_accepted(app, client):
    body = urlencode({"a": "6", "b": "3", "operation": "divide"}).encode()
    task_id = accepted(call(app, "POST", "/task", body=body, content_type=FORM))
    stored = client.hgetall(store.task_key(task_id))
    assert (stored["operation"], stored["a"], stored["b"]) == ("divide", "6", "3")


def test_a_task_posted_as_json_is_accepted_keeping_json_numbers(app, client):
    body = json.dumps({"a": 1.5, "b": 2, "operation": "multiply"}).encode()
    task_id = accepted(call(app, "POST", "/task", body=body, content_type=JSON))
    stored = client.hgetall(store.task_key(task_id))
    assert (stored["operation"], stored["a"], stored["b"]) == ("multiply", "1.5", "2")


@pytest.mark.parametrize(
    "body, says",
    [
        (b'{"a": 1.' + b"9" * 15000 + b', "b": 2}', "operand 'a' is longer than 64 characters"),
        (b'{"a": 1, "b": ' + b"1" * 5000 + b"}", "operand 'b' is longer than 64 characters"),
        (b'{"a": 1' + b"0" * 64 + b', "b": 2}', "operand 'a' is longer than 64 characters"),
        (b'{"a": 1e-400, "b": 2}', "operand 'a' is too close to 0"),
        (b'{"a": 1, "b": 1e400}', "operand 'b' must be a finite number"),
    ],
)
def test_a_json_number_meets_the_same_operand_rules_as_text(app, client, body, says):
    response = call(app, "POST", "/task", body=body, content_type=JSON)

    assert response.status == 400
    detail = strict_json(response.body)["detail"]
    assert says in detail
    assert "sys." not in detail and "int_max_str_digits" not in detail
    assert client.llen(store.TASK_QUEUE) == 0


def test_a_json_operand_of_exactly_64_characters_is_accepted_as_its_kind(app, client):
    longest = "0." + "5" * 62
    body = f'{{"a": {longest}, "b": 7}}'.encode()
    task_id = accepted(call(app, "POST", "/task", body=body, content_type=JSON))
    stored = client.hgetall(store.task_key(task_id))
    assert (stored["a"], stored["b"]) == (str(float(longest)), "7")


def test_an_underflowing_query_operand_is_refused_not_made_zero(app, client):
    response = post_task(app, a="1e-400", b="1")

    assert response.status == 400
    assert "operand 'a' is too close to 0" in strict_json(response.body)["detail"]
    assert client.llen(store.TASK_QUEUE) == 0


def test_the_operation_defaults_to_add(app, client):
    task_id = accepted(post_task(app, a="1", b="2"))
    assert client.hget(store.task_key(task_id), "operation") == "add"


def test_a_pending_task_shows_its_state_and_who_accepted_it(app):
    task_id = accepted(post_task(app, a="1", b="2"))
    response = get(app, f"/tasks/{task_id}/status")
    assert response.status == 200
    body = strict_json(response.body)
    assert body["task_id"] == task_id
    assert body["status"] == "pending"
    assert body["accepted_by"] == "node-1"
    assert body["checked_by"] == "node-1"
    assert body["handled_by"] is None
    assert body["attempts"] == 0
    assert body["started_at"] is None and body["finished_at"] is None
    assert "result" not in body


@pytest.mark.parametrize(
    "operation, a, b, result",
    [
        ("add", "1", "2", 3),
        ("add", "1.5", "2", 3.5),
        ("subtract", "10", "4", 6),
        ("multiply", "3", "0.5", 1.5),
        ("divide", "9", "3", 3),
        ("divide", "1", "8", 0.125),
    ],
)
def test_a_finished_task_shows_its_result_keeping_the_kind_of_number(
    app, worker, operation, a, b, result
):
    task_id = accepted(post_task(app, a=a, b=b, operation=operation))
    assert finish_all(worker, 1) == ["complete"]
    body = strict_json(get(app, f"/tasks/{task_id}/status").body)
    assert body["status"] == "complete"
    assert body["result"] == result and type(body["result"]) is type(result)
    assert body["handled_by"] == "node-1/w1"
    assert body["attempts"] == 1
    assert body["created_at"] <= body["started_at"] <= body["finished_at"]
    assert body["duration_ms"] >= 0


def test_a_division_by_zero_ends_failed_with_a_clear_error(app, worker):
    task_id = accepted(post_task(app, a="1", b="0", operation="divide"))
    assert finish_all(worker, 1) == ["failed"]
    body = strict_json(get(app, f"/tasks/{task_id}/status").body)
    assert body["status"] == "failed"
    assert body["error"] == "division by zero"
    assert "result" not in body


def test_a_result_too_large_for_a_float_fails_rather_than_answering_infinity(app, worker):
    task_id = accepted(post_task(app, a="1e15", b="1e-300", operation="divide"))
    assert finish_all(worker, 1) == ["failed"]
    response = get(app, f"/tasks/{task_id}/status")
    body = strict_json(response.body)
    assert body["status"] == "failed"
    assert "no finite result" in body["error"]


def test_a_finished_task_read_on_another_node_shows_that_node_as_checked_by(app, other_app, worker):
    task_id = accepted(post_task(app, a="2", b="3"))
    finish_all(worker, 1)
    response = get(other_app, f"/tasks/{task_id}/status")
    assert response.status == 200
    body = strict_json(response.body)
    assert body["checked_by"] == "node-2"
    assert body["handled_by"] == "node-1/w1"
    assert body["accepted_by"] == "node-1"
    assert body["result"] == 5


def test_the_recent_tasks_are_listed_newest_first(app, other_app):
    first = accepted(post_task(app, a="1", b="1"))
    second = accepted(post_task(other_app, a="2", b="2"))
    response = get(app, "/tasks", limit="10")
    assert response.status == 200
    tasks = strict_json(response.body)["tasks"]
    assert [t["task_id"] for t in tasks] == [second, first]
    assert [t["accepted_by"] for t in tasks] == ["node-2", "node-1"]
    assert {t["checked_by"] for t in tasks} == {"node-1"}
    assert [t["task_id"] for t in strict_json(get(app, "/tasks", limit="1").body)["tasks"]] == [
        second
    ]


def test_the_cluster_view_shows_each_heartbeating_worker_and_the_queue(app, worker):
    accepted(post_task(app, a="1", b="2"))
    worker.beat()
    response = get(app, "/cluster")
    assert response.status == 200
    body = strict_json(response.body)
    [node] = body["nodes"]
    assert node["node"] == "node-1" and node["alive"] is True
    [card] = node["workers"]
    assert card["worker"] == "node-1/w1" and card["alive"] is True
    assert body["queue"]["pending"] == 1


def test_metrics_are_prometheus_text_with_task_and_queue_series(app, worker):
    accepted(post_task(app, a="1", b="2"))
    finish_all(worker, 1)
    response = get(app, "/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = response.body.decode()
    assert 'wizard_tasks_submitted_total{node="node-1",operation="add"} 1' in text
    finished = 'wizard_tasks_finished_total{node="node-1",operation="add",outcome="complete"} 1'
    assert finished in text
    assert 'wizard_queue_pending_tasks{node="node-1"} 0' in text
    posted = '{node="node-1",route="/task",method="POST",status="202"} 1'
    assert "wizard_http_requests_total" + posted in text


def test_the_openapi_document_is_served_as_json(app):
    response = get(app, "/openapi.json")
    assert response.status == 200
    assert response.headers["Content-Type"] == JSON
    strict_json(response.body)


def dead_letter(app, client) -> str:
    """A task that exhausted its one attempt, in the dead-letter queue."""
    task_id = accepted(post_task(app, a="1", b="2"))
    scripts = queue.Scripts(client)
    claim = queue.take(client, scripts, "node-1/w9", lease_ms=2000, block_seconds=0.1)
    hand_back = queue.HandBack(
        claim.task_id, claim.worker_id, claim.attempt, "worker_lost", "the test gave up"
    )
    policy = queue.RetryPolicy(max_attempts=1, base_backoff_seconds=0.5, result_ttl_seconds=60)
    outcome = queue.retry(scripts, hand_back, policy, node_id="node-1")
    assert outcome == "dead"
    return task_id


@pytest.fixture
def admin_app(settings):
    application = make_app(dataclasses.replace(settings, admin_token="let-me-in"))
    yield application
    application.client.close()


ADMIN = {"Authorization": "Bearer let-me-in"}


def test_dead_letters_are_listed_with_their_reason(app, client):
    task_id = dead_letter(app, client)
    response = get(app, "/dead_letters")
    assert response.status == 200
    [letter] = strict_json(response.body)["dead_letters"]
    assert letter["task_id"] == task_id
    assert letter["reason"] == "worker_lost"
    assert letter["attempts"] == 1


def test_an_admin_can_retry_a_dead_letter_and_it_completes(admin_app, client, worker):
    task_id = dead_letter(admin_app, client)
    path = f"/dead_letters/{task_id}/retry"
    response = call(admin_app, "POST", path, headers=ADMIN)
    assert response.status == 202
    assert response.headers["Location"] == f"/tasks/{task_id}/status"
    assert client.llen(store.DEAD_LETTER_QUEUE) == 0
    assert finish_all(worker, 1) == ["complete"]
    assert strict_json(get(admin_app, f"/tasks/{task_id}/status").body)["result"] == 3


def test_an_admin_can_discard_a_dead_letter(admin_app, client):
    task_id = dead_letter(admin_app, client)
    response = call(admin_app, "DELETE", f"/dead_letters/{task_id}", headers=ADMIN)
    assert response.status == 200
    assert strict_json(response.body) == {
        "task_id": task_id,
        "deleted": True,
        "handled_by": "node-1",
    }
    assert not client.exists(store.task_key(task_id))
    assert get(admin_app, f"/tasks/{task_id}/status").status == 404


# --- readiness ------------------------------------------------------------


def test_readyz_is_503_until_every_worker_of_the_node_heartbeats(settings):
    two_workers = make_app(dataclasses.replace(settings, workers=2))
    first = Worker(settings, "node-1/w1")
    second = Worker(settings, "node-1/w2")
    try:
        response = get(two_workers, "/readyz")
        problem = assert_problem(
            response, 503, "service-unavailable", "node-1/w1: not heartbeating"
        )
        assert "node-1/w2: not heartbeating" in problem["detail"]
        assert response.headers["Retry-After"]
        first.beat()
        response = get(two_workers, "/readyz")
        assert_problem(response, 503, "service-unavailable", "node-1/w2")
        assert "node-1/w1" not in strict_json(response.body)["detail"]
        second.beat()
        response = get(two_workers, "/readyz")
        assert response.status == 200
        assert strict_json(response.body) == {
            "status": "ready",
            "workers": 2,
            "handled_by": "node-1",
        }
    finally:
        for closing in (two_workers, first, second):
            closing.client.close()


def test_readyz_is_503_when_valkey_may_evict_tasks(app, worker, client):
    worker.beat()
    client.config_set("maxmemory-policy", "allkeys-lru")
    try:
        assert_problem(get(app, "/readyz"), 503, "service-unavailable", "noeviction")
    finally:
        client.config_set("maxmemory-policy", "noeviction")
    assert get(app, "/readyz").status == 200


def test_readyz_names_a_full_valkey_and_is_ready_again_once_it_has_room(app, worker, client):
    worker.beat()
    client.config_set("maxmemory", "1")
    try:
        assert_problem(get(app, "/readyz"), 503, "service-unavailable", "valkey: Valkey is full")
        cluster = strict_json(get(app, "/cluster").body)
        assert any("Valkey is full" in p["reason"] for p in cluster["problems"])
    finally:
        client.config_set("maxmemory", "0")
    assert get(app, "/readyz").status == 200


def test_readyz_says_how_stale_a_silent_workers_heartbeat_is(app, worker, client):
    worker.beat()
    client.delete(store.heartbeat_key("node-1/w1"))
    problem = assert_problem(get(app, "/readyz"), 503, "service-unavailable", "node-1/w1")
    assert "heartbeat stale: last beat" in problem["detail"]
    assert "yet" not in problem["detail"]  # it did beat: silent, not starting
    worker.beat()
    assert get(app, "/readyz").status == 200


def test_readyz_and_cluster_name_a_process_in_a_restart_loop(app, worker, client):
    worker.beat()
    looping = {"restarts": 4, "in_a_row": 3, "exit_code": 3, "at": 0}
    client.hset(store.restarts_key("node-1"), "scheduler", json.dumps(looping))
    problem = assert_problem(get(app, "/readyz"), 503, "service-unavailable", "restart loop")
    assert (
        "node-1/scheduler: restart loop: died 3 times in a row (last exit code 3)"
        in (problem["detail"])
    )
    cluster = strict_json(get(app, "/cluster").body)
    (node,) = cluster["nodes"]
    assert node["restarts"] == {"scheduler": 4}
    assert {
        "part": "node-1/scheduler",
        "reason": "restart loop: died 3 times in a row (last exit code 3)",
    } in cluster["problems"]
    calm = {**looping, "in_a_row": 0}
    client.hset(store.restarts_key("node-1"), "scheduler", json.dumps(calm))
    assert get(app, "/readyz").status == 200


# --- status reads never write ---------------------------------------------


def test_reading_statuses_changes_nothing_in_valkey(app, other_app, worker, settings):
    done = accepted(post_task(app, a="1", b="2"))
    failed = accepted(post_task(app, a="1", b="0", operation="divide"))
    finish_all(worker, 2)
    pending = accepted(post_task(app, a="3", b="4"))
    before = everything_in(settings.valkey_url)
    for reader in (app, other_app):
        for task_id in (done, failed, pending, UNKNOWN_ID):
            get(reader, f"/tasks/{task_id}/status")
        get(reader, "/tasks")
        get(reader, "/dead_letters")
        get(reader, "/cluster")
    after = everything_in(settings.valkey_url)
    assert after.keys() == before.keys()
    for key, (kind, dumped, ttl) in before.items():
        assert after[key][:2] == (kind, dumped), key
        assert after[key][2] <= ttl, f"the TTL of {key} was extended"


# --- bad input: one problem document each, nothing stored -----------------

TOO_LONG = "1" * 65
BIG_BODY = json.dumps({"a": 1, "b": 2, "pad": "x" * MAX_BODY_BYTES}).encode()
HUGE_INT = b'{"a": 1' + b"0" * 40 + b', "b": 2}'

#: The problem type of each status (the end of its ``type`` URI).
SLUGS = {
    400: "invalid-input",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    413: "payload-too-large",
    415: "unsupported-media-type",
}


@dataclasses.dataclass(frozen=True)
class Bad:
    """A bad request: what is wrong with it, what to send, the status it
    must get, and words its detail must contain (what to fix)."""

    name: str
    method: str
    path: str
    payload: object
    status: int
    words: str


def task(name: str, payload: object, words: str, status: int = 400) -> Bad:
    return Bad(name, "POST", "/task", payload, status, words)


BAD_INPUTS = [
    task("a is missing", {"b": "2"}, "'a' is missing"),
    task("b is missing", {"a": "2"}, "'b' is missing"),
    task("a is empty", {"a": "", "b": "2"}, "e.g. a=2"),
    task("a is a word", {"a": "abc", "b": "2"}, "number"),
    task("a is nan", {"a": "nan", "b": "2"}, "finite"),
    task("b is inf", {"a": "1", "b": "inf"}, "finite"),
    task("b is -Infinity", {"a": "1", "b": "-Infinity"}, "finite"),
    task("a overflows", {"a": "1e400", "b": "2"}, "finite"),
    task("a is too big", {"a": "1e16", "b": "2"}, "1e15"),
    task("a has underscores", {"a": "1_000", "b": "2"}, "plain decimal"),
    task("a is too long", {"a": TOO_LONG, "b": "2"}, "64 characters"),
    task("a is in Arabic digits", {"a": "١٢", "b": "2"}, "plain decimal"),
    task("a is hexadecimal", {"a": "0x1f", "b": "2"}, "number"),
    task("unknown operation", {"a": "1", "b": "2", "operation": "power"}, "add, subtract"),
    task("crash without chaos", {"a": "1", "b": "2", "operation": "crash"}, "unknown operation"),
    task("JSON a is true", b'{"a": true, "b": 2}', "got bool"),
    task("JSON a is null", b'{"a": null, "b": 2}', "'a' is missing"),
    task("JSON a is a list", b'{"a": [1], "b": 2}', "got list"),
    task("JSON a is an object", b'{"a": {}, "b": 2}', "got dict"),
    task("JSON b is NaN", b'{"a": 1, "b": NaN}', "NaN"),
    task("JSON b is Infinity", b'{"a": 1, "b": Infinity}', "Infinity"),
    task("JSON a overflows", b'{"a": 1e400, "b": 2}', "finite"),
    task("JSON a is a huge int", HUGE_INT, "1e15"),
    task("JSON is cut short", b'{"a": 1, "b":', "not valid JSON"),
    task("JSON is a list", b"[1, 2]", "must be an object"),
    task("body too large", BIG_BODY, "16384 bytes", status=413),
    task("body is plain text", ("text/plain", b"a=1&b=2"), "application/json", status=415),
    task("form a is a word", (FORM, b"a=one&b=2"), "'a' must be a number"),
    task("a is given twice", [("a", "1"), ("a", "5"), ("b", "2")], "'a' is given 2 times"),
    task("an argument the route does not use", {"a": "1", "b": "2", "c": "3"}, "'c' is not an"),
    task("form b is given twice", (FORM, b"a=1&b=2&b=3"), "'b' is given 2 times in the body"),
    task("JSON a is a string", b'{"a": "1", "b": 2}', 'the JSON string "1"; send a JSON number'),
    task("JSON key given twice", b'{"a": 1, "b": 2, "a": 3}', "has the key 'a' twice"),
    task("JSON field not taken", b'{"a": 1, "b": 2, "c": 3}', "the body has 'c'"),
    task("JSON operation is a number", b'{"a": 1, "b": 2, "operation": 5}', "operation must"),
    task("empty operation", {"a": "1", "b": "2", "operation": ""}, "unknown operation ''"),
    task("a has spaces around it", {"a": " 1 ", "b": "2"}, "spaces around it (' 1 '); send"),
    task("form b has a newline", (FORM, b"a=1&b=2%0A"), "operand 'b' has spaces around it"),
    task("JSON in UTF-16", '{"a": 1, "b": 2}'.encode("utf-16"), "byte order mark"),
    task("JSON in UTF-16 without BOM", '{"a": 1, "b": 2}'.encode("utf-16-le"), "not UTF-8"),
    task("JSON with a UTF-8 BOM", b'\xef\xbb\xbf{"a": 1, "b": 2}', "send UTF-8 without one"),
    task("form fields with no name", (FORM, b"=&="), "a field with no name"),
    task("form a=1 with a nameless one", (FORM, b"a=1&b=2&=3"), "send name=value pairs"),
    task("query with no name", [("", "1"), ("a", "1"), ("b", "2")], "an argument with no name"),
    Bad("GET on /task", "GET", "/task", {}, 405, "use POST"),
    Bad("DELETE on /add", "DELETE", "/add", {}, 405, "use GET"),
    Bad("POST on a status", "POST", f"/tasks/{UNKNOWN_ID}/status", {}, 405, "use GET"),
    Bad("unknown route", "GET", "/tasks/all", {}, 404, "/openapi.json"),
    Bad("unknown task", "GET", f"/tasks/{UNKNOWN_ID}/status", {}, 404, "has expired"),
    Bad("malformed task id", "GET", "/tasks/not-a-task/status", {}, 404, "32 hex digits"),
    Bad("upper-case task id", "GET", f"/tasks/{'A' * 32}/status", {}, 404, "32 hex digits"),
    Bad("add without b", "GET", "/add", {"a": "1"}, 400, "'b' is missing"),
    Bad("add with a word", "GET", "/add", {"a": "x", "b": "1"}, 400, "'a' must be a number"),
    Bad(
        "add with an operation",
        "GET",
        "/add",
        {"a": "2", "b": "3", "operation": "multiply"},
        400,
        "'operation' is not an argument of GET /add; it takes a, b",
    ),
    Bad("add with a repeated", "GET", "/add", [("a", "1"), ("a", "5"), ("b", "2")], 400, "once"),
    Bad("tasks with a typo", "GET", "/tasks", {"limt": "5"}, 400, "'limt' is not an argument"),
    Bad("whoami with an argument", "GET", "/whoami", {"x": "1"}, 400, "takes no arguments"),
    Bad("limit is zero", "GET", "/tasks", {"limit": "0"}, 400, "from 1 to 200"),
    Bad("limit is a word", "GET", "/tasks", {"limit": "all"}, 400, "from 1 to 200"),
    Bad("hidden static file", "GET", "/static/.env", {}, 404, ".env"),
    Bad("static file outside", "GET", "/static/..", {}, 404, ".."),
    Bad("admin without token", "POST", f"/dead_letters/{UNKNOWN_ID}/retry", {}, 403, "TOKEN"),
]


def send(app, method: str, path: str, payload):
    """Send ``payload``: a dict (or list of pairs) goes in the query string, bytes as a JSON
    body, and a (content type, bytes) pair as that body."""
    if isinstance(payload, (dict, list)):
        return call(app, method, path, query=payload)
    if isinstance(payload, bytes):
        return call(app, method, path, body=payload, content_type=JSON)
    content_type, body = payload
    return call(app, method, path, body=body, content_type=content_type)


def assert_problem(response, status: int, slug: str, words: str) -> dict:
    """Check an RFC 9457 problem document whose detail contains ``words``."""
    assert response.status == status, response.body
    assert response.headers["Content-Type"] == "application/problem+json"
    problem = strict_json(response.body)
    assert problem["type"] == PROBLEM_BASE + slug
    assert problem["title"]
    assert problem["status"] == status
    assert problem["handled_by"] == "node-1"
    assert words in problem["detail"], problem["detail"]
    return problem


def test_there_are_at_least_twenty_distinct_bad_inputs():
    assert len({bad.name for bad in BAD_INPUTS}) == len(BAD_INPUTS) >= 20


@pytest.mark.parametrize("bad", BAD_INPUTS, ids=[bad.name for bad in BAD_INPUTS])
def test_a_bad_request_gets_a_problem_document_and_stores_no_task(app, client, bad):
    response = send(app, bad.method, bad.path, bad.payload)
    assert_problem(response, bad.status, SLUGS[bad.status], bad.words)
    assert client.llen(store.TASK_QUEUE) == 0
    assert task_keys(client) == []
    assert client.dbsize() == 0, client.keys()


def test_a_405_says_which_methods_are_allowed(app):
    response = call(app, "GET", "/task")
    assert response.headers["Allow"] == "POST"
    response = call(app, "PUT", f"/tasks/{UNKNOWN_ID}/status")
    assert response.headers["Allow"] == "GET, HEAD"


def test_a_wrong_admin_token_is_a_401_invalid_token(admin_app, client):
    task_id = dead_letter(admin_app, client)
    response = call(
        admin_app, "POST", f"/dead_letters/{task_id}/retry", headers={"Authorization": "Bearer no"}
    )
    assert response.status == 401
    assert (
        response.headers["WWW-Authenticate"] == 'Bearer realm="wizard-admin", error="invalid_token"'
    )
    assert client.lrange(store.DEAD_LETTER_QUEUE, 0, -1) == [task_id]


@pytest.mark.parametrize(
    "authorization", ["", "Basic YWRtaW46eA==", "Bearer", "Bearer ", "bearer\xe9", "let-me-in"]
)
def test_a_missing_or_malformed_admin_token_is_a_401_bearer_challenge(admin_app, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    response = call(admin_app, "DELETE", f"/dead_letters/{UNKNOWN_ID}", headers=headers)
    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="wizard-admin"'
    assert response.headers["Content-Type"] == "application/problem+json"


@pytest.mark.parametrize("token", ["\xe9", "let-me-in\xe9", "\x00\xff", "let-me-\u00ef\u00bf"])
def test_a_non_ascii_bearer_token_is_a_401_never_a_500(admin_app, token):
    headers = {"Authorization": f"Bearer {token}"}
    response = call(admin_app, "DELETE", f"/dead_letters/{UNKNOWN_ID}", headers=headers)
    assert response.status == 401
    assert "invalid_token" in response.headers["WWW-Authenticate"]


def test_a_non_ascii_admin_token_matches_its_utf8_bytes(settings, client):
    app = make_app(dataclasses.replace(settings, admin_token="s\u00e9same"))
    # What a client sends for "sésame" in UTF-8, as PEP 3333 hands it over.
    sent = "s\u00e9same".encode().decode("latin-1")
    response = call(
        app, "DELETE", f"/dead_letters/{UNKNOWN_ID}", headers={"Authorization": f"Bearer {sent}"}
    )
    assert response.status == 404


def test_no_admin_token_configured_is_a_403_whatever_is_sent(app):
    headers = {"Authorization": "Bearer anything"}
    response = call(app, "DELETE", f"/dead_letters/{UNKNOWN_ID}", headers=headers)
    assert response.status == 403
    assert "WIZARD_ADMIN_TOKEN" in response.json()["detail"]


def test_cluster_shows_a_worker_gone_once_it_misses_three_heartbeats(settings, client):
    worker = Worker(settings, "node-1/w1", client)
    worker.beat()
    app = make_app(settings)
    assert call(app, "GET", "/cluster").json()["nodes"][0]["alive"] is True

    # Its heartbeat key still exists, but its last beat is older than 3 beats.
    card = json.loads(client.hget(store.WORKER_REGISTRY, "node-1/w1"))
    card["at"] = time.time() - 3 * settings.heartbeat_seconds - 1
    client.hset(store.WORKER_REGISTRY, "node-1/w1", json.dumps(card))

    node = call(app, "GET", "/cluster").json()["nodes"][0]
    assert node["alive"] is False and node["workers"][0]["alive"] is False


def test_a_value_given_both_in_the_query_and_in_the_body_is_refused(app, client):
    response = call(
        app, "POST", "/task", query={"a": "1"}, body=b'{"a": 5, "b": 2}', content_type=JSON
    )

    assert_problem(response, 400, "invalid-input", "'a' is given twice")
    assert task_keys(client) == []


def test_fields_may_be_split_between_the_query_and_a_json_body(app):
    response = call(
        app,
        "POST",
        "/task",
        query={"operation": "multiply"},
        body=b'{"a": 94906267, "b": 94906267}',
        content_type=JSON,
    )

    assert accepted(response)


@pytest.mark.parametrize(
    "method, path, query",
    [
        ("GET", "/whoami", {}),
        ("GET", "/add", {"a": "1", "b": "2"}),
        ("POST", "/task", {"a": "1", "b": "2"}),
        ("GET", "/tasks", {}),
        ("GET", "/cluster", {}),
        ("GET", "/nowhere", {}),
        ("GET", "/openapi.json", {}),
    ],
)
def test_every_json_answer_ends_with_a_newline(app, method, path, query):
    response = call(app, method, path, query=query)

    assert "json" in response.headers["Content-Type"]
    assert response.body.endswith(b"\n") and not response.body.endswith(b"\n\n")
