"""Who the client is at the gateway, and the gateway's per-address limits:
each source address (127.0.0.x, distinct clients to nginx) has its own
budget; headers a client sends cannot change whose budget it spends; a
burst above the limit gets 429 problem documents; a trusted proxy on the
gateway's host can name the client.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.edge.gateway import burst, counts, get, new_address, request, send, unique
from tests.support import wait_for

REQUEST_IDS = unique("edge-limits")


def access_log_line(cluster, request_id: str) -> dict:
    """The gateway's access-log line of the request with ``request_id``
    (nginx flushes its log buffer every second)."""
    path = Path(cluster.var_dir) / "logs" / "nginx-access.log"

    def find():
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            if entry["request_id"] == request_id:
                return entry
        return None

    return wait_for(find, timeout=10, what=f"request {request_id} in the access log")


def test_a_burst_of_whoami_from_one_address_gets_some_429_problem_documents(cluster):
    source, other = new_address(), new_address()
    answers = burst(cluster.gateway_port, [get("/whoami")] * 100, source=source)
    found = counts(answers)
    assert set(found) == {200, 429}, found
    # The burst allowance (40 at once) passes, the rest is refused.
    assert found[200] >= 32 and found[429] >= 1, found
    refused = next(a for a in answers if a.status == 429)
    assert refused.headers["retry-after"] == "1"
    assert refused.problem["status"] == 429
    assert refused.problem["handled_by"] == "gateway"
    # Another address is not affected by the first one's burst.
    assert send(cluster.gateway_port, get("/whoami"), source=other).status == 200


def test_two_addresses_have_separate_write_budgets_at_the_gateway(cluster):
    first, second = new_address(), new_address()
    task = request("POST", "/task?a=1&b=2")
    spent = counts(burst(cluster.gateway_port, [task] * 60, source=first))
    assert spent[202] >= 1 and spent[429] >= 1, spent
    # The first address is over its budget; the second has all of its own.
    fresh = counts(burst(cluster.gateway_port, [task] * 20, source=second))
    assert fresh == {202: 20}, fresh


def test_a_client_cannot_choose_its_identity_with_forwarded_headers(cluster):
    source = new_address()
    forged = [
        request(
            "POST",
            "/task?a=1&b=2",
            X_Forwarded_For=f"203.0.113.{n}",
            X_Real_IP=f"203.0.113.{n}",
            CF_Connecting_IP=f"203.0.113.{n}",
        )
        for n in range(1, 61)
    ]
    # Sixty requests claiming sixty different clients spend one budget.
    found = counts(burst(cluster.gateway_port, forged, source=source))
    assert found[429] >= 1, found
    request_id = next(REQUEST_IDS)
    forged_one = get("/whoami", X_Forwarded_For="198.51.100.9", X_Request_ID=request_id)
    send(cluster.gateway_port, forged_one, source=source)
    # The address the gateway counted, logged and sent on as X-Forwarded-For.
    assert access_log_line(cluster, request_id)["remote"] == source


def test_a_proxy_on_the_gateways_host_names_the_client_in_x_forwarded_for(cluster):
    # 127.0.0.1 is the one trusted proxy of the local gateway (wizard-realip.conf).
    request_id = next(REQUEST_IDS)
    data = request(
        "POST",
        "/task?a=1&b=2",
        X_Forwarded_For="203.0.113.200, 198.51.100.77",
        X_Request_ID=request_id,
    )
    answer = send(cluster.gateway_port, data, source="127.0.0.1")
    assert answer.status == 202, answer
    # The rightmost address that is not a trusted proxy: hops further left
    # were written by whoever the proxy talked to, and are not believed.
    assert access_log_line(cluster, request_id)["remote"] == "198.51.100.77"


def test_requests_in_progress_from_one_address_are_capped_with_429s(cluster):
    source = new_address()
    # A POST whose body never comes holds its slot until client_body_timeout:
    # nginx has read its headers, so limit_conn counts it.
    stalled = b"POST /task HTTP/1.1\r\nHost: g\r\nContent-Length: 10\r\nConnection: close\r\n\r\nab"
    answers = burst(cluster.gateway_port, [stalled] * 40, source=source)
    found = counts(answers)
    # 32 at once (wizard-limits.conf); the others are refused at once, and the
    # stalled ones are closed by the gateway after its body timeout.
    assert found[429] >= 40 - 32, found
    assert all(a.closed for a in answers)
    assert all(a.problem["status"] == 429 for a in answers if a.status == 429)
