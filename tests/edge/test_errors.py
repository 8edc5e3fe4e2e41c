"""Every answer nginx itself makes is an RFC 9457 problem document: a list
of malformed requests sent over raw sockets to the real gateway (bad
framing, odd methods, control bytes, huge headers), each answered with the
right status, a problem document, and a closed connection; and gzip on the
text the gateway serves.
"""

from __future__ import annotations

import pytest
import requests

from tests.edge.gateway import MALFORMED, Malformed, get, new_address, send

#: Server errors that are the correct answer to a request: a transfer coding
#: nginx cannot read (501), an HTTP version it does not speak (505).
CORRECT_5XX = {501, 505}


@pytest.mark.parametrize("bad", MALFORMED, ids=[m.name for m in MALFORMED])
def test_a_malformed_request_gets_the_right_status_as_a_problem_document(cluster, bad: Malformed):
    answer = send(cluster.gateway_port, bad.data, source=new_address())
    assert answer.status in bad.statuses, answer
    assert answer.status < 500 or answer.status in CORRECT_5XX
    if answer.status >= 400:
        problem = answer.problem
        assert problem["status"] == answer.status
        assert answer.body.endswith(b"}\n"), "every JSON answer ends with a newline"
        assert problem["detail"]
        assert problem["handled_by"] == "gateway" or problem["handled_by"].startswith("node-")
    # Nothing is left hanging: the gateway closed the connection (it was
    # asked to, or the request could not go on) before the client gave up.
    assert answer.closed, answer


def test_trace_is_refused_by_the_gateway_with_the_methods_it_allows(cluster):
    answer = send(
        cluster.gateway_port, get("/whoami").replace(b"GET", b"TRACE", 1), source=new_address()
    )
    assert answer.status == 405
    assert answer.headers["allow"] == "GET, HEAD, POST, DELETE"
    assert answer.problem["handled_by"] == "gateway"


@pytest.mark.parametrize("path", ["/task", "/", "/add", "/whoami", "/tasks/x/status"])
@pytest.mark.parametrize("method", ["TRACE", "FOO", "PUT", "PATCH", "OPTIONS"])
def test_every_405_at_the_gateway_says_which_methods_are_allowed(cluster, method, path):
    data = f"{method} {path} HTTP/1.1\r\nHost: g\r\nConnection: close\r\n\r\n".encode()

    answer = send(cluster.gateway_port, data, source=new_address())

    assert answer.status in (404, 405), answer
    if answer.status == 405:
        assert answer.headers["allow"], answer
        assert answer.problem["status"] == 405
    # TRACE never reaches a node; the others get the route's own methods.
    if method == "TRACE":
        assert (answer.status, answer.problem["handled_by"]) == (405, "gateway")


@pytest.mark.parametrize("where", ["gateway", "node"])
def test_a_20_kb_header_is_a_431_problem_document_at_the_gateway_and_at_a_node(cluster, where):
    port = cluster.gateway_port if where == "gateway" else cluster.node_ports["node-1"]
    data = get("/whoami", **{"X-Note": "a" * 20_000})

    answer = send(port, data, source=new_address())

    assert answer.status == 431, answer
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.problem["type"].endswith("/headers-too-large")
    assert "send fewer or shorter headers" in answer.problem["detail"]
    assert answer.closed


def test_transfer_encoding_gzip_chunked_is_a_501_problem_document(cluster):
    data = (
        b"POST /task HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: gzip, chunked\r\n"
        b"Connection: close\r\n\r\n0\r\n\r\n"
    )
    answer = send(cluster.gateway_port, data, source=new_address())
    assert answer.status == 501
    assert "Transfer-Encoding: chunked" in answer.problem["detail"]


@pytest.mark.parametrize(
    ("path", "media_type"),
    [
        ("/", "text/html"),
        ("/static/app.css", "text/css"),
        ("/static/app.js", "text/javascript"),
        ("/openapi.json", "application/json"),
    ],
)
def test_the_gateway_gzips_html_css_javascript_and_json(cluster, path, media_type):
    plain = requests.get(cluster.url + path, headers={"Accept-Encoding": "identity"}, timeout=10)
    zipped = requests.get(cluster.url + path, headers={"Accept-Encoding": "gzip"}, timeout=10)
    assert plain.status_code == zipped.status_code == 200
    assert zipped.headers["Content-Type"].startswith(media_type)
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert "Content-Encoding" not in plain.headers
    # requests un-gzips the body: the same bytes either way.
    assert zipped.content == plain.content
    assert "Accept-Encoding" in zipped.headers["Vary"]
