"""The framework-free WSGI layer: routing, requests, problem documents.

A small route table of its own is called in-process with a wsgiref environ
(tests.support.call); no server and no Valkey are involved.
"""

from __future__ import annotations

import io
import json
import logging
from wsgiref.util import setup_testing_defaults

import pytest

from tests.support import call
from wizard.router import (
    MAX_BODY_BYTES,
    PROBLEM_BASE,
    BadRequest,
    JsonNumber,
    MethodNotAllowed,
    NotFound,
    Request,
    Response,
    Route,
    Router,
    ServiceUnavailable,
    start_response_for,
)

NODE = "node-7"


def show_item(request: Request, item_id: str) -> Response:
    return Response.json({"item": item_id})


def delete_item(request: Request, item_id: str) -> Response:
    return Response.json({"deleted": item_id})


#: The fields the echo routes take.
FIELDS = ("a", "b", "operation")


def echo_fields(request: Request) -> Response:
    # A JSON number reaches the route as its text (JsonNumber); echo it as one.
    fields = {
        name: json.loads(value.text) if isinstance(value, JsonNumber) else value
        for name, value in request.fields(FIELDS).items()
    }
    return Response.json({"fields": fields})


def show_page(request: Request) -> Response:
    return Response.json({"page": True})


def fail(request: Request) -> Response:
    raise RuntimeError("a bug with a secret in it")


def not_a_number(request: Request) -> Response:
    return Response.json({"result": float("nan")})


def busy(request: Request) -> Response:
    raise ServiceUnavailable("Valkey is unreachable; try again shortly", retry_after=3)


def missing(request: Request, item_id: str) -> Response:
    raise NotFound(f"there is no item {item_id}")


ROUTER = Router(
    [
        Route("GET", "/items/<item_id>", show_item),
        Route("DELETE", "/items/<item_id>", delete_item),
        Route("POST", "/items", echo_fields, params=FIELDS),
        Route("GET", "/echo", echo_fields, params=FIELDS),
        Route("GET", "/page", show_page, params=None),
        Route("GET", "/boom", fail),
        Route("GET", "/nan", not_a_number),
        Route("GET", "/busy", busy),
        Route("GET", "/gone/<item_id>", missing),
    ],
    node_id=NODE,
)


def app(environ, start_response):
    """ROUTER as a WSGI application, like Api.__call__ without metrics."""
    request = Request(environ)
    _, response = ROUTER.dispatch(request)
    return start_response_for(response, request, start_response)


def strict_json(body: bytes):
    """Parse JSON as RFC 8259 does: NaN and Infinity are errors."""

    def refuse(name):
        raise AssertionError(f"{name} in a response body")

    return json.loads(body, parse_constant=refuse)


def assert_problem(response, status: int, slug: str) -> dict:
    assert response.status == status
    assert response.headers["Content-Type"] == "application/problem+json"
    problem = strict_json(response.body)
    assert problem["type"] == PROBLEM_BASE + slug
    assert problem["status"] == status
    assert problem["title"]
    assert problem["detail"]
    assert problem["handled_by"] == NODE
    return problem


# --- matching -------------------------------------------------------------


def test_match_returns_the_route_and_its_path_parameters():
    route, params = ROUTER.match("GET", "/items/42")
    assert route.handler is show_item
    assert params == {"item_id": "42"}


def test_a_path_parameter_matches_exactly_one_segment():
    with pytest.raises(NotFound):
        ROUTER.match("GET", "/items/42/more")
    with pytest.raises(NotFound):
        ROUTER.match("GET", "/items/")


def test_a_path_with_no_route_raises_not_found():
    with pytest.raises(NotFound):
        ROUTER.match("GET", "/nowhere")


def test_a_known_path_with_the_wrong_method_raises_method_not_allowed_with_the_allowed_ones():
    with pytest.raises(MethodNotAllowed) as refused:
        ROUTER.match("PUT", "/items/42")
    assert refused.value.allowed == ["DELETE", "GET", "HEAD"]
    assert refused.value.headers == {"Allow": "DELETE, GET, HEAD"}


def test_regular_expression_characters_in_a_pattern_match_only_themselves():
    router = Router([Route("GET", "/a.b", show_item)])
    with pytest.raises(NotFound):
        router.match("GET", "/aXb")


# --- through WSGI ---------------------------------------------------------


def test_a_get_route_answers_json_with_its_path_parameter():
    response = call(app, "GET", "/items/abc")
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == {"item": "abc"}
    assert response.headers["Content-Length"] == str(len(response.body))


def test_an_unknown_path_is_a_404_problem_document():
    problem = assert_problem(call(app, "GET", "/nowhere"), 404, "not-found")
    assert "/nowhere" in problem["detail"]
    assert problem["title"] == "Not Found"


def test_a_wrong_method_is_a_405_problem_with_an_allow_header():
    response = call(app, "POST", "/items/abc")
    problem = assert_problem(response, 405, "method-not-allowed")
    assert response.headers["Allow"] == "DELETE, GET, HEAD"
    assert "POST" in problem["detail"]
    assert "DELETE, GET" in problem["detail"]


def test_a_post_only_path_allows_only_post():
    response = call(app, "GET", "/items")
    assert_problem(response, 405, "method-not-allowed")
    assert response.headers["Allow"] == "POST"


def test_head_is_served_by_the_get_route_with_headers_and_no_body():
    got = call(app, "GET", "/items/abc")
    head = call(app, "HEAD", "/items/abc")
    assert head.status == 200
    assert head.body == b""
    assert head.headers["Content-Length"] == got.headers["Content-Length"]
    assert head.headers["Content-Type"] == "application/json"


def test_head_on_a_path_without_get_is_refused_with_405():
    response = call(app, "HEAD", "/items")
    assert response.status == 405
    assert response.body == b""


def test_a_handler_error_keeps_its_own_status_and_detail():
    problem = assert_problem(call(app, "GET", "/gone/7"), 404, "not-found")
    assert problem["detail"] == "there is no item 7"


def test_a_503_problem_carries_retry_after():
    response = call(app, "GET", "/busy")
    assert_problem(response, 503, "service-unavailable")
    assert response.headers["Retry-After"] == "3"


def test_an_unexpected_exception_is_a_500_problem_without_the_traceback(caplog):
    with caplog.at_level(logging.ERROR, logger="wizard.router"):
        response = call(app, "GET", "/boom")
    problem = assert_problem(response, 500, "internal-error")
    assert "secret" not in response.body.decode()
    assert "Traceback" not in response.body.decode()
    assert "logged" in problem["detail"]
    assert any(r.exc_info and "secret" in str(r.exc_info[1]) for r in caplog.records)


def test_a_handler_returning_nan_gives_a_500_problem_never_a_nan_in_json(caplog):
    with caplog.at_level(logging.ERROR, logger="wizard.router"):
        response = call(app, "GET", "/nan")
    assert_problem(response, 500, "internal-error")


def test_response_json_refuses_nan_and_infinity():
    for value in (float("nan"), float("inf"), float("-inf")):
        with pytest.raises(ValueError):
            Response.json({"x": value})


def test_a_request_id_sent_by_the_client_is_echoed_back():
    response = call(app, "GET", "/items/1", headers={"X-Request-ID": "abc-123"})
    assert response.headers["X-Request-ID"] == "abc-123"


def test_a_request_without_a_usable_id_gets_a_fresh_one():
    for sent in ({}, {"X-Request-ID": "has spaces"}, {"X-Request-ID": "x" * 65}):
        response = call(app, "GET", "/items/1", headers=sent)
        request_id = response.headers["X-Request-ID"]
        assert len(request_id) == 32 and int(request_id, 16) >= 0


# --- request fields -------------------------------------------------------


def test_fields_come_from_the_query_string():
    response = call(app, "GET", "/echo", query={"a": "1", "b": "2.5", "operation": "add"})
    assert response.json() == {"fields": {"a": "1", "b": "2.5", "operation": "add"}}


def test_a_blank_query_value_is_kept_as_an_empty_string():
    response = call(app, "GET", "/echo", query={"a": ""})
    assert response.json() == {"fields": {"a": ""}}


def problem_detail(response, status: int = 400) -> str:
    assert response.status == status, response.body
    assert response.headers["Content-Type"] == "application/problem+json"
    return response.json()["detail"]


def test_a_repeated_query_argument_is_refused_naming_it():
    response = call(app, "GET", "/echo", query=[("a", "1"), ("a", "5")])
    assert "'a' is given 2 times ('1', '5')" in problem_detail(response)


def test_a_query_argument_the_route_does_not_take_is_refused_naming_it():
    response = call(app, "GET", "/echo", query={"a": "1", "colour": "red"})
    assert "'colour' is not an argument of GET /echo; it takes a, b, operation" in problem_detail(
        response
    )


def test_a_route_without_arguments_refuses_any():
    response = call(app, "GET", "/boom", query={"x": "1"})
    assert "it takes no arguments" in problem_detail(response)


def test_a_page_lets_any_query_string_through():
    response = call(app, "GET", "/page", query={"utm_source": "mail"})
    assert response.status == 200


def test_a_field_both_in_the_query_and_in_the_body_is_refused():
    response = call(
        app,
        "POST",
        "/items",
        query={"a": "1", "operation": "add"},
        body=b"a=7&b=8",
        content_type="application/x-www-form-urlencoded",
    )
    assert "'a' is given twice, in the query string and in the body" in problem_detail(response)


def test_a_form_field_given_twice_is_refused():
    response = call(
        app, "POST", "/items", body=b"a=7&a=8", content_type="application/x-www-form-urlencoded"
    )
    assert "'a' is given 2 times in the body" in problem_detail(response)


def test_a_json_key_given_twice_is_refused():
    body = b'{"a": 1, "b": 2, "a": 3}'
    response = call(app, "POST", "/items", body=body, content_type="application/json")
    assert "the JSON body has the key 'a' twice" in problem_detail(response)


def test_a_body_field_the_route_does_not_take_is_refused():
    body = b'{"a": 1, "b": 2, "c": 3}'
    response = call(app, "POST", "/items", body=body, content_type="application/json")
    assert "the body has 'c', which POST /items does not take" in problem_detail(response)


def test_fields_come_from_the_query_and_a_form_body_together():
    response = call(
        app,
        "POST",
        "/items",
        query={"operation": "add"},
        body=b"a=7&b=8",
        content_type="application/x-www-form-urlencoded",
    )
    assert response.json() == {"fields": {"a": "7", "b": "8", "operation": "add"}}


def test_every_json_answer_ends_with_a_newline():
    assert call(app, "GET", "/items/1").body.endswith(b"}\n")
    assert call(app, "GET", "/gone/1").body.endswith(b"}\n")


def test_fields_come_from_a_json_body_keeping_json_types():
    body = json.dumps({"a": 1, "b": 2.5, "operation": "divide"}).encode()
    response = call(app, "POST", "/items", body=body, content_type="application/json")
    assert response.json() == {"fields": {"a": 1, "b": 2.5, "operation": "divide"}}


def test_a_json_number_is_kept_as_its_text_for_the_route_to_parse():
    body = b'{"a": 1.' + b"9" * 5000 + b', "b": ' + b"1" * 5000 + b', "c": 1e-400, "d": "1"}'
    environ = {"REQUEST_METHOD": "POST", "CONTENT_TYPE": "application/json"}
    environ.update({"CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body)})
    setup_testing_defaults(environ)

    fields = Request(environ).fields(("a", "b", "c", "d"))

    assert fields == {
        "a": JsonNumber("1." + "9" * 5000),
        "b": JsonNumber("1" * 5000),
        "c": JsonNumber("1e-400"),
        "d": "1",
    }
    assert str(fields["c"]) == "1e-400"


def test_a_json_content_type_with_a_charset_is_still_json():
    response = call(
        app, "POST", "/items", body=b'{"a": 1}', content_type="Application/JSON; charset=utf-8"
    )
    assert response.json() == {"fields": {"a": 1}}


def test_an_empty_body_with_any_content_type_gives_the_query_fields():
    response = call(app, "POST", "/items", query={"a": "1"}, content_type="text/plain")
    assert response.json() == {"fields": {"a": "1"}}


@pytest.mark.parametrize(
    "body, says",
    [
        (b'{"a": 1', "not valid JSON"),
        (b"[1, 2]", "must be an object"),
        (b'"text"', "must be an object"),
        (b'{"a": NaN}', "NaN"),
        (b'{"a": Infinity}', "Infinity"),
        (b'{"a": -Infinity}', "Infinity"),
        (b"\xff\xfe{}", "byte order mark"),
    ],
)
def test_a_json_body_that_is_not_a_json_object_is_a_400_problem(body, says):
    response = call(app, "POST", "/items", body=body, content_type="application/json")
    problem = assert_problem(response, 400, "invalid-input")
    assert says in problem["detail"]


def test_a_body_of_another_content_type_is_a_415_problem_naming_the_accepted_ones():
    response = call(app, "POST", "/items", body=b"a=1", content_type="text/plain")
    problem = assert_problem(response, 415, "unsupported-media-type")
    assert "application/json" in problem["detail"]
    assert "application/x-www-form-urlencoded" in problem["detail"]


def test_a_body_without_a_content_type_is_a_415_problem():
    response = call(app, "POST", "/items", body=b'{"a": 1}')
    assert_problem(response, 415, "unsupported-media-type")


def test_a_body_over_the_limit_is_a_413_problem_naming_the_limit():
    body = b'{"a": "' + b"1" * MAX_BODY_BYTES + b'"}'
    response = call(app, "POST", "/items", body=body, content_type="application/json")
    problem = assert_problem(response, 413, "payload-too-large")
    assert str(MAX_BODY_BYTES) in problem["detail"]


def test_a_body_of_exactly_the_limit_is_read():
    padding = MAX_BODY_BYTES - len(b'{"a": ""}')
    body = b'{"a": "' + b"x" * padding + b'"}'
    assert len(body) == MAX_BODY_BYTES
    response = call(app, "POST", "/items", body=body, content_type="application/json")
    assert response.status == 200


def test_a_declared_length_over_the_limit_is_refused_before_reading_the_body():
    class Unreadable(io.RawIOBase):
        def read(self, size=-1):
            raise AssertionError("the body was read")

    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/items",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(10 * MAX_BODY_BYTES),
        "wsgi.input": Unreadable(),
    }
    setup_testing_defaults(environ)
    captured = {}

    def start_response(status, headers, exc_info=None):
        captured["status"] = status

    app(environ, start_response)
    assert captured["status"].startswith("413")


def test_a_content_length_that_is_not_a_number_is_a_400_problem():
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/items",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": "lots",
        "wsgi.input": io.BytesIO(b"{}"),
    }
    setup_testing_defaults(environ)
    request = Request(environ)
    _, response = ROUTER.dispatch(request)
    assert response.status == 400
    assert "Content-Length" in strict_json(response.body)["detail"]


def test_a_deeply_nested_json_body_is_a_400_not_a_crash():
    body = ("[" * 5000 + "]" * 5000).encode()
    request = Request(
        {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": "/task",
            "CONTENT_TYPE": "application/json",
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.input": io.BytesIO(body),
        }
    )

    with pytest.raises(BadRequest, match="nested too deeply"):
        request.fields(FIELDS)
