"""The node side of the edge, on a real cluster (Valkey, two nodes, nginx):
who the client is, per-client limits, and health that sync work cannot starve.

Clients are real, distinct source addresses: every 127.x.y.z address is this
machine, so binding a socket to 127.0.0.2 makes nginx and the nodes see a
different client than 127.0.0.3, with no header involved.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import valkey

from tests.support import request_from
from wizard import store
from wizard.cluster import GATEWAY_SOURCE, LocalCluster, free_port

#: Each client may make 5 requests to the work routes, then one per 100 s:
#: "one window" lasts the whole test.
BURST = 5
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Valkey, two nodes (8 request threads, 2 sync slots, 0.3 CPU-seconds
    per addition: far inside the gateway's 8 s read timeout even on a busy
    machine) and nginx, with the rate limit on."""
    local = LocalCluster(
        gateway_port=free_port(),
        nodes=2,
        workers=1,
        var_dir=tmp_path_factory.mktemp("edge"),
        node_env={
            "WIZARD_WORK_SECONDS": "0.3",
            "WIZARD_RATE_LIMIT": "0.01",
            "WIZARD_RATE_BURST": str(BURST),
            "WIZARD_THREADS": "8",
            "WIZARD_SYNC_SLOTS": "2",
        },
    )
    with local:
        yield local


@pytest.fixture(scope="module")
def db(cluster):
    connection = valkey.Valkey.from_url(cluster.admin_url, decode_responses=True)
    yield connection
    connection.close()


def submit(cluster, source: str, *, url: str = "", headers: dict | None = None, body=b"a=1&b=2"):
    """POST /task from ``source``, through the gateway unless ``url`` is given."""
    return request_from(
        source, url or cluster.url, "POST", "/task", headers={**FORM, **(headers or {})}, body=body
    )


# --- identity and budgets -------------------------------------------------


def test_two_clients_behind_the_gateway_have_separate_budgets(cluster, db):
    first = [submit(cluster, "127.0.0.2").status for _ in range(BURST + 10)]
    other = submit(cluster, "127.0.0.3")

    assert first.count(202) == BURST
    assert first[BURST:] == [429] * 10
    assert other.status == 202
    assert db.exists(store.rate_limit_key("127.0.0.2"), store.rate_limit_key("127.0.0.3")) == 2
    assert not db.exists(store.rate_limit_key(GATEWAY_SOURCE)), "nginx itself counted as a client"


def test_answers_carry_ratelimit_headers_and_a_429_says_when_to_retry(cluster):
    answers = [submit(cluster, "127.0.0.8") for _ in range(BURST + 1)]

    assert answers[0].headers["ratelimit-policy"] == f'"work";q={BURST};w=500'
    assert answers[0].headers["ratelimit"].startswith(f'"work";r={BURST - 1};t=')
    refused = answers[-1]
    assert refused.status == 429
    assert refused.headers["content-type"] == "application/problem+json"
    assert int(refused.headers["retry-after"]) >= 1
    assert "127.0.0.8" in refused.json()["detail"]


def test_forwarded_headers_from_a_client_do_not_change_who_it_is(cluster, db):
    for _ in range(BURST):
        submit(cluster, "127.0.0.9")
    assert submit(cluster, "127.0.0.9").status == 429
    claims = {"X-Forwarded-For": "127.0.0.10", "X-Real-IP": "127.0.0.10"}

    spoofed = submit(cluster, "127.0.0.9", headers=claims)
    direct = submit(cluster, "127.0.0.9", url=cluster.node_url("node-1"), headers=claims)

    assert (spoofed.status, direct.status) == (429, 429)
    assert not db.exists(store.rate_limit_key("127.0.0.10"))


def test_a_client_on_the_gateways_own_host_address_cannot_forge_its_identity(cluster, db):
    # 127.0.0.1 is where every local client comes from by default; the
    # gateway reaches the nodes from its own address, so a direct client on
    # 127.0.0.1 is not mistaken for the gateway.
    forged = {"X-Forwarded-For": "127.0.0.77", "X-Real-IP": "127.0.0.77"}

    direct = submit(cluster, "127.0.0.1", url=cluster.node_url("node-2"), headers=forged)
    through = submit(cluster, "127.0.0.13")

    assert (direct.status, through.status) == (202, 202)
    assert db.exists(store.rate_limit_key("127.0.0.1"))
    assert not db.exists(store.rate_limit_key("127.0.0.77"))
    assert db.exists(store.rate_limit_key("127.0.0.13"))
    assert not db.exists(store.rate_limit_key(GATEWAY_SOURCE)), "the gateway counted as a client"
    assert cluster.gateway_source == GATEWAY_SOURCE


def test_an_idempotency_key_is_scoped_to_its_client(cluster):
    key = {"Idempotency-Key": "shared-key-1"}
    mine = submit(cluster, "127.0.0.11", headers=key)
    again = submit(cluster, "127.0.0.11", headers=key)
    theirs = submit(cluster, "127.0.0.12", headers=key, body=b"a=9&b=9")

    assert (mine.status, again.status, theirs.status) == (202, 202, 202)
    assert again.json()["task_id"] == mine.json()["task_id"]
    assert theirs.json()["task_id"] != mine.json()["task_id"]


# --- health is never starved by sync work ---------------------------------

PROBES = ("/healthz", "/readyz", "/metrics", "/whoami")


def test_health_answers_while_additions_flood_and_excess_sync_work_is_refused(cluster):
    # 200 concurrent /add through the gateway, two from each of 100 addresses
    # (each within its own budget), against 2 x 2 sync slots of 0.3 CPU-seconds each.
    sources = [f"127.0.1.{n}" for n in range(1, 101)] * 2
    flooding = threading.Event()
    flooding.set()
    probes: list[tuple[str, int, float]] = []

    def probe() -> None:
        # Each round of probes comes from the next of 100 addresses, so no
        # address nears the gateway's 20 reads/s (burst 40) however fast this
        # machine loops: a 429 here would be the gateway, not starved health.
        deadline = time.monotonic() + 60
        rounds = 0
        while flooding.is_set() and time.monotonic() < deadline and rounds < 10_000:
            source = f"127.0.2.{rounds % 100 + 1}"
            rounds += 1
            for path in PROBES:
                answer = request_from(source, cluster.url, "GET", path, timeout=10)
                probes.append((path, answer.status, time.monotonic()))

    def add(source: str):
        return request_from(source, cluster.url, "GET", "/add?a=1&b=2", timeout=60)

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        with ThreadPoolExecutor(max_workers=len(sources)) as pool:
            answers = list(pool.map(add, sources))
        flood_ended = time.monotonic()
    finally:
        flooding.clear()
        prober.join(timeout=30)

    statuses = {answer.status for answer in answers}
    assert statuses <= {200, 503}, statuses
    busy = [answer for answer in answers if answer.status == 503]
    assert busy, "200 concurrent additions on 4 sync slots: some must be refused"
    assert all("POST /task" in answer.json()["detail"] for answer in busy)
    assert all(int(answer.headers["retry-after"]) >= 1 for answer in busy)
    assert any(answer.status == 200 for answer in answers)
    during = [(path, status) for path, status, at in probes if at < flood_ended]
    assert {path for path, _ in during} == set(PROBES), "health did not answer during the flood"
    assert {status for _, status in during} == {200}
