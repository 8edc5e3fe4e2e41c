"""The OpenAPI document is the contract, and the API keeps it.

Three kinds of checks:

1. the document itself: valid OpenAPI 3.1, exactly the routes of
   ``Api.routes()``, errors always problem+json with the headers they need;
2. every response the document describes is produced for real, in-process
   against the real Valkey (tasks really move through a worker step, dead
   letters really come from a reaped lost worker, 503s from a closed port),
   and checked against the document: status, headers, media type, body;
3. sweeps over every path: a wrong method is a documented 405 with the right
   ``Allow``, and with Valkey down a route answers 503 exactly when the
   document says it may.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from openapi_spec_validator import validate

from tests.contract.conftest import GHOST_WORKER, Lab
from tests.contract.openapi_contract import Contract, pointer
from tests.support import WsgiResponse
from wizard import store
from wizard.api import OPENAPI_PATH, make_app
from wizard.config import Settings

CONTRACT = Contract.load()

#: A well-formed task id that no test ever creates.
UNKNOWN_ID = "0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def contract() -> Contract:
    return CONTRACT


# --- the document itself ----------------------------------------------------


def test_the_document_is_valid_openapi_3_1(contract):
    validate(contract.document)
    assert contract.document["openapi"] == "3.1.0"


def test_the_document_describes_exactly_the_routes_of_the_api(contract):
    app = make_app(Settings())
    routes = {(route.method, re.sub(r"<(\w+)>", r"{\1}", route.pattern)) for route in app.routes()}
    app.client.close()
    assert routes - contract.operations() == set(), "routes missing from wizard/openapi.json"
    assert contract.operations() - routes == set(), "documented operations with no route"


def test_every_error_response_is_a_problem_document_with_the_headers_it_needs(contract):
    for method, template in sorted(contract.operations()):
        responses = pointer("paths", template, method.lower(), "responses")
        for status in contract.statuses(method, template):
            where, response = contract.follow(responses + pointer(str(status)))
            headers = set(response.get("headers", {}))
            assert "X-Request-ID" in headers, f"{method} {template} {status}"
            if status < 400:
                continue
            what = f"{method} {template} {status}"
            assert list(response["content"]) == ["application/problem+json"], what
            schema = response["content"]["application/problem+json"]["schema"]
            assert schema["allOf"][0] == {"$ref": "#/components/schemas/ProblemDetails"}, what
            assert schema["allOf"][1]["properties"]["status"] == {"const": status}, what
            required = {
                401: "WWW-Authenticate",
                405: "Allow",
                429: "Retry-After",
                503: "Retry-After",
            }.get(status)
            assert required is None or required in headers, f"{what} lacks {required}"


def test_problem_details_have_the_members_of_rfc_9457_plus_handled_by(contract):
    problem = contract.document["components"]["schemas"]["ProblemDetails"]
    assert set(problem["required"]) == {"type", "title", "status", "detail", "handled_by"}
    assert problem["additionalProperties"] is False


def test_the_admin_routes_and_only_they_require_the_bearer_token(contract):
    scheme = contract.document["components"]["securitySchemes"]["bearerAuth"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    secured = {
        (method, template)
        for method, template in contract.operations()
        if contract.at(pointer("paths", template, method.lower())).get("security")
    }
    assert secured == {
        ("POST", "/dead_letters/{task_id}/retry"),
        ("DELETE", "/dead_letters/{task_id}"),
    }
    for method, template in secured:
        assert 403 in contract.statuses(method, template)


def test_the_served_document_is_the_file_in_the_package(lab):
    response = lab.call("GET", "/openapi.json")
    assert response.status == 200
    assert response.body == OPENAPI_PATH.read_bytes()


# --- every documented response, produced for real ---------------------------


@dataclass(frozen=True)
class Case:
    """One real exchange: what to do, and the operation and status the
    document should describe it with."""

    method: str
    template: str
    status: int
    story: str
    run: Callable[[Lab], WsgiResponse]

    def __str__(self) -> str:
        return f"{self.method} {self.template} {self.status} {self.story}"


CASES: list[Case] = []


def case(method: str, template: str, status: int, story: str):
    """Register the decorated function as a Case."""

    def register(run: Callable[[Lab], WsgiResponse]) -> Callable[[Lab], WsgiResponse]:
        CASES.append(Case(method, template, status, story, run))
        return run

    return register


@case("GET", "/", 200, "the dashboard")
def _dashboard(lab):
    return lab.call("GET", "/")


@case("GET", "/static/{name}", 200, "a file of the dashboard")
def _static_file(lab):
    return lab.call("GET", "/static/index.html")


@case("GET", "/static/{name}", 404, "a file that does not exist")
def _static_missing(lab):
    return lab.call("GET", "/static/no-such-file.css")


@case("GET", "/static/{name}", 404, "a hidden file")
def _static_hidden(lab):
    return lab.call("GET", "/static/.gitignore")


@case("GET", "/whoami", 200, "the node's identity")
def _whoami(lab):
    return lab.call("GET", "/whoami")


@case("GET", "/healthz", 200, "alive")
def _healthz(lab):
    return lab.call("GET", "/healthz")


@case("GET", "/readyz", 200, "Valkey answers and the worker heartbeats")
def _ready(lab):
    lab.beat("node-1/w1")
    return lab.call("GET", "/readyz")


@case("GET", "/readyz", 503, "the worker has never heartbeated")
def _not_ready(lab):
    return lab.call("GET", "/readyz")


@case("GET", "/valkey_test", 200, "a write read back")
def _valkey_test(lab):
    return lab.call("GET", "/valkey_test")


@case("GET", "/add", 200, "integers stay integers")
def _add_integers(lab):
    response = lab.call("GET", "/add", query={"a": "1", "b": "2"})
    assert response.json()["sum"] == 3 and isinstance(response.json()["sum"], int)
    return response


@case("GET", "/add", 200, "a float makes a float")
def _add_floats(lab):
    response = lab.call("GET", "/add", query={"a": "1.5", "b": "2"})
    assert response.json()["sum"] == 3.5
    return response


@case("GET", "/add", 400, "an operand is missing")
def _add_missing(lab):
    return lab.call("GET", "/add", query={"a": "1"})


@case("GET", "/add", 400, "an operand is not a number")
def _add_not_a_number(lab):
    return lab.call("GET", "/add", query={"a": "1", "b": "two"})


@case("GET", "/add", 400, "an operand is not finite")
def _add_infinite(lab):
    return lab.call("GET", "/add", query={"a": "inf", "b": "2"})


@case("GET", "/add", 429, "a second request over the limit")
def _add_too_often(lab):
    return _twice(lab, "GET", "/add")


def _twice(lab: Lab, method: str, path: str) -> WsgiResponse:
    """Two requests from one client to a node that allows it only one."""
    limited = lab.limited()
    headers = {"X-Forwarded-For": "203.0.113.7"}
    query = {"a": "1", "b": "2"}
    try:
        first = lab.call(method, path, app=limited, query=query, headers=headers)
        assert first.status < 300, first.body
        return lab.call(method, path, app=limited, query=query, headers=headers)
    finally:
        limited.client.close()


@case("POST", "/task", 202, "operands in the query string")
def _submit_query(lab):
    return lab.call("POST", "/task", query={"a": "1", "b": "2", "operation": "add"})


@case("POST", "/task", 202, "a form body")
def _submit_form(lab):
    form = b"a=7&b=5&operation=subtract"
    return lab.call("POST", "/task", body=form, content_type="application/x-www-form-urlencoded")


@case("POST", "/task", 202, "a JSON body")
def _submit_json(lab):
    body = json.dumps({"a": 1.5, "b": 2, "operation": "multiply"}).encode()
    return lab.call("POST", "/task", body=body, content_type="application/json")


@case("POST", "/task", 400, "an unknown operation")
def _submit_unknown_operation(lab):
    return lab.call("POST", "/task", query={"a": "1", "b": "2", "operation": "power"})


@case("POST", "/task", 400, "a JSON body that is not an object")
def _submit_json_array(lab):
    return lab.call("POST", "/task", body=b"[1, 2]", content_type="application/json")


@case("POST", "/task", 400, "NaN in a JSON body")
def _submit_json_nan(lab):
    body = b'{"a": NaN, "b": 2}'
    return lab.call("POST", "/task", body=body, content_type="application/json")


@case("POST", "/task", 413, "a body over 16 KiB")
def _submit_too_large(lab):
    body = json.dumps({"a": 1, "b": 2, "padding": "x" * 16384}).encode()
    return lab.call("POST", "/task", body=body, content_type="application/json")


@case("POST", "/task", 415, "a plain-text body")
def _submit_plain_text(lab):
    return lab.call("POST", "/task", body=b"a=1&b=2", content_type="text/plain")


@case("POST", "/task", 429, "a second task over the limit")
def _submit_too_often(lab):
    response = _twice(lab, "POST", "/task")
    assert lab.client.llen(store.TASK_QUEUE) == 1
    return response


@case("POST", "/task", 202, "a repeat with the same Idempotency-Key")
def _submit_repeated(lab):
    key = {"Idempotency-Key": "contract-1"}
    first = lab.call("POST", "/task", query={"a": 1, "b": 2}, headers=key)
    again = lab.call("POST", "/task", query={"a": 1, "b": 2}, headers=key)
    assert again.json()["task_id"] == first.json()["task_id"]
    return again


@case("POST", "/task", 202, "a repeat with the same Idempotency-Key once the task ran")
def _submit_repeated_after_work(lab):
    key = {"Idempotency-Key": "contract-4"}
    lab.call("POST", "/task", query={"a": 1, "b": 2}, headers=key)
    assert lab.work() == "complete"
    again = lab.call("POST", "/task", query={"a": 1, "b": 2}, headers=key)
    assert again.json()["status"] == "complete"
    return again


@case("POST", "/task", 202, "with the rate limit on: RateLimit headers")
def _submit_rate_limited(lab):
    limited = lab.limited()
    try:
        response = lab.call("POST", "/task", app=limited, query={"a": 1, "b": 2})
    finally:
        limited.client.close()
    assert response.headers["RateLimit-Policy"].startswith('"work";q=1;w=')
    return response


@case("POST", "/task", 503, "the queue is full")
def _submit_queue_full(lab):
    full = make_app(dataclasses.replace(lab.settings, max_pending=1))
    try:
        assert lab.call("POST", "/task", app=full, query={"a": 1, "b": 2}).status == 202
        response = lab.call("POST", "/task", app=full, query={"a": 1, "b": 2})
    finally:
        full.client.close()
    assert "the queue is full" in response.json()["detail"]
    assert lab.client.llen(store.TASK_QUEUE) == 1
    return response


@case("POST", "/task", 422, "an Idempotency-Key reused with other operands")
def _submit_key_reused(lab):
    key = {"Idempotency-Key": "contract-2"}
    lab.call("POST", "/task", query={"a": 1, "b": 2}, headers=key)
    return lab.call("POST", "/task", query={"a": 9, "b": 2}, headers=key)


@case("POST", "/task", 202, "a repeat after the task of its Idempotency-Key expired: a new task")
def _submit_key_expired(lab):
    key = {"Idempotency-Key": "contract-3"}
    first = lab.call("POST", "/task", query={"a": 1, "b": 2}, headers=key)
    lab.client.delete(store.task_key(first.json()["task_id"]))
    again = lab.call("POST", "/task", query={"a": 1, "b": 2}, headers=key)
    assert again.json()["task_id"] != first.json()["task_id"]
    return again


@case("GET", "/tasks", 200, "pending, complete and failed tasks")
def _recent_tasks(lab):
    lab.submit(1, 2)
    assert lab.work() == "complete"
    lab.submit(1, 0, "divide")
    assert lab.work() == "failed"
    lab.submit(3, 4, "multiply")
    response = lab.call("GET", "/tasks", query={"limit": "10"})
    statuses = [task["status"] for task in response.json()["tasks"]]
    assert statuses == ["pending", "failed", "complete"]
    return response


@case("GET", "/tasks", 304, "nothing changed since the ETag sent back")
def _recent_tasks_unchanged(lab):
    lab.submit(1, 2)
    first = lab.call("GET", "/tasks")
    tag = first.headers["ETag"]
    response = lab.call("GET", "/tasks", headers={"If-None-Match": tag})
    assert response.body == b"" and response.headers["ETag"] == tag
    lab.submit(3, 4)
    changed = lab.call("GET", "/tasks", headers={"If-None-Match": tag})
    assert changed.status == 200 and changed.headers["ETag"] != tag
    return response


@case("GET", "/tasks", 400, "a limit out of range")
def _recent_tasks_bad_limit(lab):
    return lab.call("GET", "/tasks", query={"limit": "0"})


@case("GET", "/tasks/{task_id}/status", 200, "pending, no worker yet")
def _status_pending(lab):
    task_id = lab.submit(1, 2)
    response = lab.call("GET", f"/tasks/{task_id}/status")
    assert response.json()["handled_by"] is None
    return response


@case("GET", "/tasks/{task_id}/status", 200, "complete after a real worker step")
def _status_complete(lab):
    task_id = lab.submit(1.5, 2)
    assert lab.work("node-1/w1") == "complete"
    response = lab.call("GET", f"/tasks/{task_id}/status")
    body = response.json()
    assert (body["status"], body["result"]) == ("complete", 3.5)
    assert (body["accepted_by"], body["handled_by"], body["checked_by"]) == (
        "node-1",
        "node-1/w1",
        "node-1",
    )
    return response


@case("GET", "/tasks/{task_id}/status", 200, "failed on a division by zero")
def _status_failed(lab):
    task_id = lab.submit(1, 0, "divide")
    assert lab.work() == "failed"
    response = lab.call("GET", f"/tasks/{task_id}/status")
    assert response.json()["error"] == "division by zero"
    return response


@case("GET", "/tasks/{task_id}/status", 200, "dead-lettered after its worker was lost")
def _status_dead_letter(lab):
    task_id = lab.dead_letter()
    response = lab.call("GET", f"/tasks/{task_id}/status")
    body = response.json()
    assert (body["status"], body["reason"], body["handled_by"]) == (
        "failed",
        "worker_lost",
        GHOST_WORKER,
    )
    return response


@case("GET", "/tasks/{task_id}/status", 404, "a task that never existed")
def _status_unknown(lab):
    return lab.call("GET", f"/tasks/{UNKNOWN_ID}/status")


@case("GET", "/tasks/{task_id}/status", 404, "an id of the wrong shape")
def _status_malformed(lab):
    return lab.call("GET", "/tasks/not-a-task-id/status")


@case("GET", "/tasks/{task_id}/status", 500, "a task hash corrupted in Valkey")
def _status_corrupt(lab):
    lab.client.hset(store.task_key(UNKNOWN_ID), "status", "pending")
    return lab.call("GET", f"/tasks/{UNKNOWN_ID}/status")


@case("GET", "/cluster", 200, "a live worker holding a pending queue")
def _cluster(lab):
    lab.beat("node-1/w1")
    lab.submit(1, 2)
    return lab.call("GET", "/cluster")


@case("GET", "/dead_letters", 200, "one task dead-lettered by the reaper")
def _dead_letters(lab):
    task_id = lab.dead_letter()
    response = lab.call("GET", "/dead_letters")
    [letter] = response.json()["dead_letters"]
    assert (letter["task_id"], letter["reason"], letter["attempts"]) == (task_id, "worker_lost", 1)
    return response


@case("GET", "/dead_letters", 400, "a limit that is not a number")
def _dead_letters_bad_limit(lab):
    return lab.call("GET", "/dead_letters", query={"limit": "many"})


@case("POST", "/dead_letters/{task_id}/retry", 202, "queued again with the token")
def _redrive(lab):
    task_id = lab.dead_letter()
    response = lab.call("POST", f"/dead_letters/{task_id}/retry", headers=lab.admin())
    assert lab.work() == "complete"
    assert lab.call("GET", f"/tasks/{task_id}/status").json()["result"] == 42
    return response


@case("POST", "/dead_letters/{task_id}/retry", 401, "no Authorization header")
def _redrive_anonymous(lab):
    task_id = lab.dead_letter()
    return lab.call("POST", f"/dead_letters/{task_id}/retry")


@case("POST", "/dead_letters/{task_id}/retry", 401, "a wrong token")
def _redrive_wrong_token(lab):
    task_id = lab.dead_letter()
    headers = {"Authorization": "Bearer not-the-token"}
    return lab.call("POST", f"/dead_letters/{task_id}/retry", headers=headers)


@case("POST", "/dead_letters/{task_id}/retry", 403, "no token configured on the node")
def _redrive_disabled(lab):
    task_id = lab.dead_letter()
    unguarded = make_app(Settings(valkey_url=lab.settings.valkey_url, node_id="node-1"))
    try:
        return lab.call(
            "POST", f"/dead_letters/{task_id}/retry", app=unguarded, headers=lab.admin()
        )
    finally:
        unguarded.client.close()


@case("POST", "/dead_letters/{task_id}/retry", 404, "a task that is not a dead letter")
def _redrive_not_dead(lab):
    task_id = lab.submit(1, 2)
    return lab.call("POST", f"/dead_letters/{task_id}/retry", headers=lab.admin())


@case("DELETE", "/dead_letters/{task_id}", 200, "deleted with the token")
def _discard(lab):
    task_id = lab.dead_letter()
    response = lab.call("DELETE", f"/dead_letters/{task_id}", headers=lab.admin())
    assert lab.call("GET", f"/tasks/{task_id}/status").status == 404
    return response


@case("DELETE", "/dead_letters/{task_id}", 401, "no Authorization header")
def _discard_anonymous(lab):
    task_id = lab.dead_letter()
    return lab.call("DELETE", f"/dead_letters/{task_id}")


@case("DELETE", "/dead_letters/{task_id}", 401, "a wrong token")
def _discard_wrong_token(lab):
    task_id = lab.dead_letter()
    headers = {"Authorization": "Bearer \xe9"}
    response = lab.call("DELETE", f"/dead_letters/{task_id}", headers=headers)
    assert lab.client.lrange(store.DEAD_LETTER_QUEUE, 0, -1) == [task_id]
    return response


@case("DELETE", "/dead_letters/{task_id}", 403, "no token configured on the node")
def _discard_disabled(lab):
    task_id = lab.dead_letter()
    unguarded = make_app(Settings(valkey_url=lab.settings.valkey_url, node_id="node-1"))
    try:
        return lab.call("DELETE", f"/dead_letters/{task_id}", app=unguarded, headers=lab.admin())
    finally:
        unguarded.client.close()


@case("DELETE", "/dead_letters/{task_id}", 404, "an id that is not a dead letter")
def _discard_unknown(lab):
    return lab.call("DELETE", f"/dead_letters/{UNKNOWN_ID}", headers=lab.admin())


@case("GET", "/metrics", 200, "the exposition")
def _metrics(lab):
    return lab.call("GET", "/metrics")


@case("GET", "/openapi.json", 200, "this document")
def _openapi(lab):
    return lab.call("GET", "/openapi.json")


# --- sweeps over every documented operation -----------------------------------


def concrete(template: str) -> str:
    """A real path for a template: path parameters filled with harmless values."""
    return template.replace("{name}", "index.html").replace("{task_id}", UNKNOWN_ID)


def _wrong_method_case(method: str, template: str) -> Case:
    wrong = "GET" if method != "GET" else "DELETE"

    def run(lab: Lab) -> WsgiResponse:
        response = lab.call(wrong, concrete(template))
        allowed = "GET, HEAD" if method == "GET" else method
        assert response.headers["Allow"] == allowed
        return response

    return Case(method, template, 405, f"sent as {wrong}", run)


def _valkey_down_case(method: str, template: str) -> Case:
    statuses = CONTRACT.statuses(method, template)
    expected = 503 if 503 in statuses else min(statuses)

    def run(lab: Lab) -> WsgiResponse:
        down = lab.down()
        query = {"a": "1", "b": "2"} if template in ("/add", "/task") else None
        try:
            return lab.call(method, concrete(template), app=down, query=query, headers=lab.admin())
        finally:
            down.client.close()

    return Case(method, template, expected, "with Valkey unreachable", run)


for _method, _template in sorted(CONTRACT.operations()):
    CASES.append(_wrong_method_case(_method, _template))
    CASES.append(_valkey_down_case(_method, _template))


@pytest.mark.parametrize("exchange", CASES, ids=str)
def test_each_real_response_is_the_one_the_document_describes(exchange, lab, contract):
    response = exchange.run(lab)
    assert response.status == exchange.status, response.body
    contract.check_response(exchange.method, exchange.template, response)
    if response.status < 300:
        contract.check_request(exchange.method, exchange.template, **lab.last_request)


def test_every_documented_response_is_produced_by_a_real_case(contract):
    documented = {
        (method, template, status)
        for method, template in contract.operations()
        for status in contract.statuses(method, template)
    }
    produced = {(c.method, c.template, c.status) for c in CASES}
    # A 500 is a bug by definition: it is documented on every operation but
    # can be provoked for real only where corrupt data in Valkey reaches it.
    missing = {entry for entry in documented - produced if entry[2] != 500}
    assert missing == set(), "documented responses no test produces"
    assert produced - documented == set(), "cases expecting undocumented responses"
    assert any(status == 500 for _, _, status in produced)


def test_a_path_no_route_has_is_the_documented_not_found_problem(lab, contract):
    response = lab.call("GET", "/no/such/route")
    assert response.status == 404
    body = contract.check_against("/components/responses/NotFound", response)
    assert body["handled_by"] == "node-1"


def test_head_is_answered_like_get_without_a_body(lab, contract):
    head = lab.call("HEAD", "/whoami", headers={"X-Request-ID": "head-check-1"})
    assert head.status == 200 and head.body == b""
    assert head.headers["Content-Type"] == "application/json"
    assert head.headers["X-Request-ID"] == "head-check-1"
    assert int(head.headers["Content-Length"]) > 0


def test_the_request_id_a_client_sends_comes_back_and_a_bad_one_is_replaced(lab):
    kept = lab.call("GET", "/healthz", headers={"X-Request-ID": "client-id_1.2"})
    assert kept.headers["X-Request-ID"] == "client-id_1.2"
    replaced = lab.call("GET", "/healthz", headers={"X-Request-ID": "bad id; drop"})
    assert re.fullmatch(r"[0-9a-f]{32}", replaced.headers["X-Request-ID"])


def test_the_cluster_view_marks_each_worker_by_its_own_heartbeat(lab):
    lab.beat("node-1/w2")
    lab.beat("node-1/w1")
    lab.client.delete(store.heartbeat_key("node-1/w2"))
    body = lab.call("GET", "/cluster").json()
    [node] = body["nodes"]
    alive = {worker["worker"]: worker["alive"] for worker in node["workers"]}
    assert alive == {"node-1/w1": True, "node-1/w2": False}
    assert body["queue"]["workers_alive"] == 1
