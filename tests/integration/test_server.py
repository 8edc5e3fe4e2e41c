"""The API process's waitress server at its edge: a request waitress itself
refuses (a body over the API's limit, before it is read) is answered with the
same problem document the API and the gateway give. A real waitress server on
a free loopback port, serving a WSGI app that must never be reached.
"""

from __future__ import annotations

import json
import socket
import threading

import pytest
from waitress import wasyncore

from wizard.cluster import free_port
from wizard.config import Settings
from wizard.router import MAX_BODY_BYTES
from wizard.server import create, problem_body


def never_called(environ, start_response):
    """The app behind the server; a refused request must not reach it."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"the app was reached\n"]


@pytest.fixture
def node_port():
    """A waitress server made by wizard.server.create, on its own thread;
    closed (every socket, its thread pool) at the end."""
    settings = Settings(host="127.0.0.1", port=free_port(), node_id="node-7", threads=2)
    server = create(never_called, settings)
    thread = threading.Thread(target=server.run, name="test-waitress", daemon=True)
    thread.start()
    try:
        yield settings.port
    finally:
        server.task_dispatcher.shutdown()
        wasyncore.close_all(server._map)
        thread.join(timeout=10)


def exchange(port: int, data: bytes) -> bytes:
    """Send ``data``, read until the server closes the connection (or 10 s)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(data)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return answer


def problem_of(answer: bytes) -> dict:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"content-type: application/problem+json" in head.lower(), head
    assert body.endswith(b"}\n"), body
    return json.loads(body)


def assert_the_apis_413(problem: dict) -> None:
    assert problem == {
        "type": "https://math-wizard.example/problems/payload-too-large",
        "title": "Content Too Large",
        "status": 413,
        "detail": f"the body may be at most {MAX_BODY_BYTES} bytes",
        "handled_by": "node-7",
    }


def test_a_content_length_over_the_limit_is_refused_before_the_body_is_sent(node_port):
    # Only the headers are sent: an answer at all means the body was not awaited.
    head = (
        b"POST /task HTTP/1.1\r\nHost: n\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000000\r\n\r\n"
    )
    answer = exchange(node_port, head)
    assert answer.startswith(b"HTTP/1.1 413 "), answer
    assert_the_apis_413(problem_of(answer))


def test_a_chunked_body_over_the_limit_is_refused_with_the_same_problem(node_port):
    chunk = b"x" * (MAX_BODY_BYTES + 1)
    request = (
        b"POST /task HTTP/1.1\r\nHost: n\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
        + f"{len(chunk):x}\r\n".encode()
        + chunk
        + b"\r\n0\r\n\r\n"
    )
    answer = exchange(node_port, request)
    assert answer.startswith(b"HTTP/1.1 413 "), answer
    assert_the_apis_413(problem_of(answer))


def test_a_body_at_the_limit_reaches_the_app(node_port):
    body = b"x" * MAX_BODY_BYTES
    request = (
        b"POST /task HTTP/1.1\r\nHost: n\r\nContent-Type: text/plain\r\nConnection: close\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    answer = exchange(node_port, request)
    assert answer.startswith(b"HTTP/1.1 200 "), answer
    assert answer.endswith(b"the app was reached\n")


def test_other_refusals_name_waitress_reason_in_compact_json_ending_in_a_newline():
    body = problem_body(400, "Bad Request", "Invalid chunk size", "node-7")
    assert body.endswith(b"}\n") and b'": ' not in body
    problem = json.loads(body)
    assert problem["type"].endswith("/bad-request")
    assert "Invalid chunk size" in problem["detail"]
    assert problem["handled_by"] == "node-7"
