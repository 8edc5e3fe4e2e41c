"""Fuzzing the public API through the gateway of a real cluster.

Two parts: schemathesis requests generated from /openapi.json (bounded to
about 90 s), and a short list of malformed requests written byte by byte,
which no HTTP library would send. The promise checked on every answer: no
5xx, and every error an RFC 9457 problem document.

The generated requests all come from one address, as fast as the cluster
answers: the gateway's per-address limits (20 reads a second) would refuse
most of them with its own 429 before any node saw them, so the cluster runs
without them (``gateway_limits=False``) and the requests still cross nginx.
The nodes' own rate limit stays on, generous, so its headers are fuzzed too.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import requests

from tests.fuzz.fuzzer import fuzz
from wizard.api import OPENAPI_PATH
from wizard.cluster import LocalCluster, free_port

ADMIN_TOKEN = "fuzz-admin-token"

#: Cases per operation and mode (positive, negative), and the wall-clock cap
#: of the whole generated run, seconds: about 16 x 2 x 60 requests at most.
EXAMPLES = 60
SECONDS = 90


def fuzz_cluster(var_dir: Path, **node_env: str) -> LocalCluster:
    """Valkey, two nodes (no simulated work, an admin token, a generous rate
    limit so RateLimit headers are on) and nginx without its per-address
    limits (see the module docstring); ``node_env`` adds to the nodes'
    variables. Not started."""
    return LocalCluster(
        gateway_port=free_port(),
        nodes=2,
        workers=1,
        var_dir=var_dir,
        gateway_limits=False,
        node_env={
            "WIZARD_WORK_SECONDS": "0",
            "WIZARD_ADMIN_TOKEN": ADMIN_TOKEN,
            "WIZARD_RATE_LIMIT": "200",
            "WIZARD_RATE_BURST": "400",
            **node_env,
        },
    )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with fuzz_cluster(tmp_path_factory.mktemp("fuzz")) as local:
        yield local


def test_the_gateway_serves_the_document_being_fuzzed(cluster):
    served = requests.get(cluster.url + "/openapi.json", timeout=10).json()
    assert served == json.loads(OPENAPI_PATH.read_text())


@pytest.mark.timeout(SECONDS + 60)
def test_generated_requests_get_no_5xx_and_only_problem_documents(cluster):
    report = fuzz(cluster.url, examples=EXAMPLES, seconds=SECONDS, admin_token=ADMIN_TOKEN)

    assert report.operations == 16
    assert len(report.answered) == report.operations, report.answered
    assert report.requests >= 300, f"too few requests in {report.seconds:.0f} s: {report.statuses}"
    assert report.server_errors == []
    assert report.not_problems == []
    assert report.no_answer == []
    assert any(status >= 400 for status in report.statuses), "no error was provoked at all"
    # The app was fuzzed, not a rate limiter: few answers are 429s.
    assert report.statuses[429] * 10 <= report.requests, report.statuses


# --- malformed requests, byte by byte ---------------------------------------

UNKNOWN_ID = "0123456789abcdef0123456789abcdef"

MALFORMED = {
    "control byte in a header value": b"GET /whoami HTTP/1.1\r\nHost: x\r\nX-Note: a\x01b\r\n",
    "non-ASCII bearer token": (
        f"DELETE /dead_letters/{UNKNOWN_ID} HTTP/1.1\r\nHost: x\r\n".encode()
        + b"Authorization: Bearer \xe9\r\n"
    ),
    "made-up method": b"FROB /healthz HTTP/1.1\r\nHost: x\r\n",
    "non-ASCII Idempotency-Key": (
        b"POST /task?a=1&b=2 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
        b"Idempotency-Key: cl\xc3\xa9\r\n"
    ),
    "non-ASCII X-Forwarded-For": (
        b"GET /add?a=1&b=2 HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: \xff\r\n"
    ),
    "Content-Length that is not a number": (
        b"POST /task?a=1&b=2 HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n"
    ),
}


def send_raw(port: int, head: bytes) -> tuple[int, str, bytes]:
    """Send ``head`` (request line and headers) then a blank line, on a fresh
    connection; return the status, Content-Type and body of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as connection:
        connection.sendall(head + b"Connection: close\r\n\r\n")
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    head_bytes, _, body = answer.partition(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    kind = {name.lower(): value for name, value in headers.items()}.get("content-type", "")
    return int(lines[0].split()[1]), kind, body


@pytest.mark.parametrize("name", sorted(MALFORMED))
@pytest.mark.parametrize("where", ["gateway", "node"])
def test_an_odd_request_never_gets_a_5xx_and_an_error_is_a_problem(cluster, name, where):
    port = cluster.gateway_port if where == "gateway" else cluster.node_ports["node-1"]

    status, kind, body = send_raw(port, MALFORMED[name])

    assert status < 500, body
    if status >= 400:
        assert kind == "application/problem+json", body
        assert json.loads(body)["status"] == status
    else:
        assert name in ACCEPTABLE, f"{name} was accepted: {body!r}"


#: Odd but harmless: a forwarded header that is not an address is ignored.
ACCEPTABLE = {"non-ASCII X-Forwarded-For"}
