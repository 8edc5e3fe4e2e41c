"""The gateway side of the edge, measured: the figures of docs/edge.md, "Gateway".

    make edge-figures        (runs: python -m benchmarks.edge_gateway, then the node's)

Starts its own local cluster (a real Valkey, two nodes, the real nginx with
its per-address limits on) on free ports, measures, stops it by PID, and
rewrites only the table between the ``gateway figures`` markers of the
"Gateway" section in docs/edge.md; everything else in the file is kept.
Every number in that table comes from this run: nothing is typed in.
The same clients as tests/edge (raw sockets bound to 127.0.0.x addresses).
"""

from __future__ import annotations

import os
import re
import signal
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import requests

from tests.edge.gateway import (
    MALFORMED,
    burst,
    counts,
    get,
    half_open,
    new_address,
    percentile,
    request,
    send,
)
from wizard.cluster import ROOT, LocalCluster, free_port

DOC = ROOT / "docs" / "edge.md"
BEGIN = "<!-- gateway figures: begin (written by `make edge-figures`) -->"
END = "<!-- gateway figures: end -->"

#: Half-sent requests from one address, and requests meanwhile from others.
SLOW_CONNECTIONS = 1100
OTHER_REQUESTS = 200
OTHER_ADDRESSES = 10
PARTIAL = b"GET /whoami HTTP/1.1\r\nHost: gateway\r\n"
#: 5xx answers that are correct: 501 (transfer coding), 505 (HTTP version).
CORRECT_5XX = {501, 505}


def budgets(port: int) -> list[tuple[str, str]]:
    """Two clients' separate budgets: a burst over the write limit from one
    address, then a burst within it from another; and a /whoami burst."""
    task = request("POST", "/task?a=1&b=2")
    first = counts(burst(port, [task] * 60, source=new_address()))
    second = counts(burst(port, [task] * 20, source=new_address()))
    reads = counts(burst(port, [get("/whoami")] * 100, source=new_address()))
    return [
        ("60 `POST /task` at once from address A", _tally(first)),
        ("then 20 `POST /task` at once from address B", _tally(second)),
        ("100 `GET /whoami` at once from address C", _tally(reads)),
    ]


def _tally(found: dict) -> str:
    return ", ".join(f"{found[status]} × {status}" for status in sorted(found, key=str))


def latencies(port: int) -> list[float]:
    """Seconds per request of OTHER_REQUESTS sequential /whoami from
    OTHER_ADDRESSES addresses in turn (each stays within its read limit).

    Raises:
        AssertionError: a request was not answered 200.
    """
    others = [new_address() for _ in range(OTHER_ADDRESSES)]
    took = []
    for n in range(OTHER_REQUESTS):
        answer = send(port, get("/whoami"), source=others[n % OTHER_ADDRESSES])
        assert answer.status == 200, answer
        took.append(answer.seconds)
    return took


def slowloris(port: int) -> list[tuple[str, str]]:
    """Other clients' latency alone, then under SLOW_CONNECTIONS trickling
    half-sent requests from one address; then how long the gateway takes to
    close those once they fall silent."""
    alone = latencies(port)
    stop = threading.Event()
    with half_open(port, new_address(), SLOW_CONNECTIONS, PARTIAL) as held:

        def keep_alive() -> None:
            while not stop.wait(1.0):
                held.trickle()

        trickler = threading.Thread(target=keep_alive)
        trickler.start()
        try:
            loaded = latencies(port)
            open_meanwhile = SLOW_CONNECTIONS - held.closed_by_gateway(timeout=0)
        finally:
            stop.set()
            trickler.join()
        silent = time.monotonic()
        closed = held.closed_by_gateway(timeout=30)
        closing = time.monotonic() - silent
    return [
        (f"{OTHER_REQUESTS} `GET /whoami` from other addresses, alone: p50 / p99", _ms(alone)),
        (
            f"the same while {open_meanwhile} half-sent requests from one address "
            "are held open: p50 / p99",
            _ms(loaded),
        ),
        ("answers 200 of those requests", f"{OTHER_REQUESTS} of {OTHER_REQUESTS}"),
        (
            "half-sent connections closed by the gateway once silent",
            f"{closed} of {SLOW_CONNECTIONS}, all within {closing:.1f} s",
        ),
    ]


def _ms(values: list[float]) -> str:
    return f"{percentile(values, 0.5) * 1000:.1f} ms / {percentile(values, 0.99) * 1000:.1f} ms"


def malformed(port: int) -> list[tuple[str, str]]:
    """The raw-socket list of malformed requests: statuses, wrong 5xx,
    error bodies that are not problem documents, connections left open."""
    answers = [send(port, bad.data, source=new_address()) for bad in MALFORMED]
    statuses = Counter(a.status for a in answers)
    wrong_5xx = sum(1 for a in answers if a.status >= 500 and a.status not in CORRECT_5XX)
    not_problem = sum(
        1 for a in answers if a.status >= 400 and a.content_type != "application/problem+json"
    )
    hanging = sum(1 for a in answers if not a.closed)
    return [
        ("malformed requests sent (tests/edge/gateway.py: MALFORMED)", str(len(answers))),
        ("their statuses", _tally(statuses)),
        ("5xx other than 501 / 505", str(wrong_5xx)),
        ("error answers that are not application/problem+json", str(not_problem)),
        ("connections left open past the gateway's timeouts", str(hanging)),
    ]


def frozen_node(cluster: LocalCluster) -> list[tuple[str, str]]:
    """How long a node frozen with SIGSTOP holds a POST /task and a GET /add
    at the gateway before the 504 (the first that lands on it)."""
    pid = requests.get(cluster.node_url("node-2") + "/whoami", timeout=5).json()["pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        post = _first_504(cluster.gateway_port, request("POST", "/task?a=1&b=2"))
        add = _first_504(cluster.gateway_port, get("/add?a=1&b=2"))
    finally:
        os.kill(pid, signal.SIGCONT)
    return [
        ("a `POST /task` held by a frozen node (SIGSTOP) before its 504", post),
        ("a `GET /add` held by a frozen node before its 504 (not re-sent)", add),
    ]


def _first_504(port: int, data: bytes) -> str:
    source = new_address()
    for _ in range(4):
        answer = send(port, data, source=source)
        if answer.status == 504:
            return f"{answer.seconds:.1f} s"
    raise AssertionError("no request reached the frozen node")


def measure() -> list[tuple[str, str]]:
    """Start a cluster, take every measurement, stop it. Returns the rows."""
    with tempfile.TemporaryDirectory(prefix="wizard-edge-") as var_dir:
        cluster = LocalCluster(
            gateway_port=free_port(),
            nodes=2,
            var_dir=Path(var_dir),
            node_env={"WIZARD_WORK_SECONDS": "0"},
        )
        with cluster:
            port = cluster.gateway_port
            # Each measurement uses fresh addresses: fresh budgets.
            rows = budgets(port)
            rows += slowloris(port)
            rows += malformed(port)
            rows += frozen_node(cluster)
    return rows


def table(rows: list[tuple[str, str]]) -> str:
    measured = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    lines = [
        BEGIN,
        f"Measured {measured} by `make edge-figures` (benchmarks/edge_gateway.py) on "
        f"{os.cpu_count()} CPUs, load average at the end {load}: latencies are "
        "wall-clock and shared the cores with everything else running.",
        "",
        "| What | Measured |",
        "|---|---|",
    ]
    lines += [f"| {what} | {value} |" for what, value in rows]
    return "\n".join([*lines, END])


def write(rows: list[tuple[str, str]]) -> None:
    """Replace the table between the markers in docs/edge.md.

    Raises:
        SystemExit: the file or its markers are missing.
    """
    if not DOC.exists() or BEGIN not in DOC.read_text():
        raise SystemExit(f"{DOC} has no line {BEGIN!r}: put it in the Gateway section")
    text = DOC.read_text()
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    DOC.write_text(pattern.sub(lambda _: table(rows), text))


if __name__ == "__main__":
    write(measure())
    print(f"wrote the gateway figures into {DOC.relative_to(ROOT)}")
