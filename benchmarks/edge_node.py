"""The node side of the edge, measured: the figures of docs/edge.md, "Node".

Run from the repository root (``make edge-figures``)::

    .venv/bin/python -m benchmarks.edge_node            # measure, print, rewrite docs/edge.md
    .venv/bin/python -m benchmarks.edge_node --print    # measure and print only

Two local clusters (real Valkey, nodes and nginx on 127.0.0.1), one after
the other, each stopped by PID before the next starts:

1. *limits*: two nodes (one per core of a 2-core machine) without workers
   (nothing drains the queue), the rate limit on (``WIZARD_RATE_LIMIT=0.01``,
   bursts of 20: one window lasts the whole run), ``WIZARD_MAX_PENDING=2000``,
   the demo's 2 s of CPU work per ``/add``, and the default sync slots,
   threads and switch interval. Measured: two clients' budgets, health
   latency under 200 concurrent ``/add`` (every status they got, and when),
   and a Valkey fill attempt.
2. *remedies*: the same flood on clusters with the settings the defaults
   replaced (4 sync slots, Python's 5 ms switch interval), one change at a
   time (:data:`VARIANTS`): /healthz latency during each.
3. *fuzz*: the fuzz suite's cluster and run (tests/fuzz), for its counts.

Clients are distinct source addresses (127.0.0.2, 127.0.1.7, ...): every
127.x address is this machine, so nginx and the nodes see real, different
peers. Latencies are wall-clock, client side, through the gateway.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import valkey
import yaml

from tests.fuzz.fuzzer import fuzz
from tests.fuzz.test_fuzz import ADMIN_TOKEN, EXAMPLES, SECONDS, fuzz_cluster
from tests.support import request_from
from wizard import store
from wizard.cluster import ROOT, LocalCluster, free_port
from wizard.config import Settings

DOC = ROOT / "docs" / "edge.md"
START, END = "<!-- node-figures:start -->", "<!-- node-figures:end -->"

BURST = 20
MAX_PENDING = 2000
FLOOD = 200
#: Nodes of the flood's clusters: one per core of a 2-core machine, as a
#: deployment gives each node a core (compose: ``cpus: "1.0"``).
NODES = 2
#: CPU seconds of one addition: the demo's (compose, Kubernetes).
WORK_SECONDS = 2.0
#: Longest a flood may last, seconds.
FLOOD_TIMEOUT = 120
#: (sync slots, switch interval in seconds) of the comparison floods: the
#: defaults before (4 slots, Python's 5 ms), one change at a time, and both
#: (today's defaults), each measured the same way.
VARIANTS = ((4, 0.005), (2, 0.005), (4, 0.001), (2, 0.001))
PROBES = ("/healthz", "/readyz", "/metrics", "/whoami")
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def health_check_timeout() -> float:
    """The shortest ``timeoutSeconds`` of the app's liveness and readiness
    probes in ops/k8s/app-deployment.yaml, seconds (compose's is the same
    2 s); a health check that takes longer counts as failed."""
    manifest = yaml.safe_load((ROOT / "ops" / "k8s" / "app-deployment.yaml").read_text())
    (container,) = manifest["spec"]["template"]["spec"]["containers"]
    return min(float(container[probe]["timeoutSeconds"]) for probe in PROBE_KINDS)


PROBE_KINDS = ("livenessProbe", "readinessProbe")
HEALTH_CHECK_TIMEOUT = health_check_timeout()


def limits_cluster(var_dir: Path) -> LocalCluster:
    """Cluster 1 (see the module docstring)."""
    return LocalCluster(
        gateway_port=free_port(),
        nodes=NODES,
        workers=0,
        var_dir=var_dir,
        # The node's own limits are measured: nginx's per-address limits
        # would refuse the probes first (docs/edge.md has the gateway's).
        gateway_limits=False,
        node_env={
            "WIZARD_WORK_SECONDS": str(WORK_SECONDS),
            "WIZARD_RATE_LIMIT": "0.01",
            "WIZARD_RATE_BURST": str(BURST),
            "WIZARD_MAX_PENDING": str(MAX_PENDING),
            "WIZARD_LOG_LEVEL": "warning",
        },
    )


def submit(url: str, source: str):
    return request_from(source, url, "POST", "/task", headers=FORM, body=b"a=1&b=2")


def budgets(cluster: LocalCluster, db: valkey.Valkey) -> list[str]:
    """Two clients, 30 POST /task each, one after the other."""
    rows = []
    for source in ("127.0.0.2", "127.0.0.3"):
        statuses = [submit(cluster.url, source).status for _ in range(BURST + 10)]
        key = store.rate_limit_key(source)
        rows.append(
            f"| client {source}: {BURST + 10} `POST /task` in one window | "
            f"{statuses.count(202)} accepted, {statuses.count(429)} answered 429; "
            f"`{key}` in Valkey: {'yes' if db.exists(key) else 'no'} |"
        )
    gateway = db.exists(store.rate_limit_key(cluster.gateway_source))
    rows.append(f"| the gateway itself counted as a client | {'yes' if gateway else 'no'} |")
    return rows


def percentile(values: list[float], fraction: float) -> float:
    """The ``fraction`` quantile (nearest rank) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def flood(cluster: LocalCluster) -> list[str]:
    """Health latency, idle then under 200 concurrent GET /add."""
    idle = [timed_probe(cluster.url, "/healthz") for _ in range(100)]
    answers, lasted, timings = flood_and_probe(cluster.url, PROBES)
    defaults = Settings()
    rows = [
        f"| `/healthz` idle, 100 requests | p50 {ms(statistics.median(idle))}, "
        f"p99 {ms(percentile(idle, 0.99))} |",
        f"| {FLOOD} concurrent `GET /add` ({WORK_SECONDS:g} s of CPU work each) through "
        f"the gateway to {NODES} nodes of {defaults.sync_slots} sync slots "
        f"(the defaults) | {by_status(answers)}; flood over in {lasted:.1f} s |",
    ]
    for path in PROBES:
        rows.append(f"| `{path}` during the flood | {latencies(timings[path])} |")
    return rows


def remedies(var_dir: Path) -> list[str]:
    """The same flood with the settings the defaults replaced, one cluster
    each (:data:`VARIANTS`): /healthz during it, and what the additions got."""
    rows = []
    for slots, interval in VARIANTS:
        cluster = LocalCluster(
            gateway_port=free_port(),
            nodes=NODES,
            workers=0,
            var_dir=var_dir / f"slots-{slots}-switch-{interval}",
            gateway_limits=False,
            node_env={
                "WIZARD_WORK_SECONDS": str(WORK_SECONDS),
                "WIZARD_SYNC_SLOTS": str(slots),
                "WIZARD_SWITCH_INTERVAL": str(interval),
                "WIZARD_LOG_LEVEL": "warning",
            },
        )
        with cluster:
            answers, _, timings = flood_and_probe(cluster.url, ("/healthz",))
        rows.append(
            f"| the same flood, {slots} sync slots, switch interval {interval * 1000:g} ms: "
            f"`/healthz` | {latencies(timings['/healthz'])}; the additions: "
            f"{by_status(answers)} |"
        )
    return rows


def flood_and_probe(url: str, paths: tuple[str, ...]):
    """Send the flood from its own process (:func:`send_flood`), so the
    probes here do not wait for the flood's threads to let go of the
    interpreter lock, and probe each of ``paths`` from its own thread, one
    request after the other, until the flood is over. Returns the flood's
    ``[(status, seconds)...]``, how long it lasted, seconds, and each path's
    latencies, seconds."""
    sources = [f"127.0.1.{n}" for n in range(1, FLOOD // 2 + 1)] * 2
    context = multiprocessing.get_context("spawn")
    started, results = context.Event(), context.Queue()
    flooder = context.Process(target=send_flood, args=(url, sources, started, results))
    flooder.start()
    over = threading.Event()
    try:
        if not started.wait(timeout=60):
            raise SystemExit("the flood process did not start")
        with ThreadPoolExecutor(max_workers=len(paths)) as pool:
            probing = {path: pool.submit(probe_until, url, path, over) for path in paths}
            answers, lasted = results.get(timeout=FLOOD_TIMEOUT)
            over.set()
            timings = {path: future.result() for path, future in probing.items()}
    finally:
        over.set()
        flooder.join(timeout=60)
    return answers, lasted, timings


def probe_until(url: str, path: str, over: threading.Event) -> list[float]:
    """Latencies of ``path``, one request after the other until ``over``
    is set (at most FLOOD_TIMEOUT seconds)."""
    deadline = time.monotonic() + FLOOD_TIMEOUT
    values = []
    while not over.is_set() and time.monotonic() < deadline:
        values.append(timed_probe(url, path))
    return values


def send_flood(url: str, sources: list[str], started, results) -> None:
    """In a child process: one GET /add per source, all at once; puts
    ([(status, seconds)...], seconds the flood lasted) on ``results``."""
    with ThreadPoolExecutor(max_workers=len(sources)) as pool:
        began = time.monotonic()
        started.set()
        answers = list(pool.map(lambda source: add(url, source), sources))
    results.put((answers, time.monotonic() - began))


def timed_probe(url: str, path: str) -> float:
    started = time.perf_counter()
    answer = request_from("127.0.0.250", url, "GET", path, timeout=30)
    assert answer.status == 200, (path, answer.status, answer.body[:200])
    return time.perf_counter() - started


def add(url: str, source: str) -> tuple[int, float]:
    started = time.perf_counter()
    answer = request_from(source, url, "GET", "/add?a=1&b=2", timeout=60)
    return answer.status, time.perf_counter() - started


def by_status(answers: list[tuple[int, float]]) -> str:
    """Every status of ``answers`` with its count and when it came, e.g.
    "4 × 200 after 4.1 to 4.4 s, 196 × 503 after p50 12.0 ms (max 90.1 ms)"."""
    parts = []
    for status in sorted({status for status, _ in answers}):
        times = [seconds for code, seconds in answers if code == status]
        if status == 503:
            when = f"after p50 {ms(statistics.median(times))} (max {ms(max(times))})"
        elif f"{min(times):.1f}" == f"{max(times):.1f}":
            when = f"after {max(times):.1f} s"
        else:
            when = f"after {min(times):.1f} to {max(times):.1f} s"
        parts.append(f"{len(times)} × {status} {when}")
    return ", ".join(parts)


def latencies(values: list[float]) -> str:
    """Count, p50, p99 and max of ``values``, and the max as a share of the
    health checks' timeout."""
    return (
        f"{len(values)} requests: p50 {ms(statistics.median(values))}, "
        f"p99 {ms(percentile(values, 0.99))}, max {ms(max(values))} "
        f"({100 * max(values) / HEALTH_CHECK_TIMEOUT:.0f} % of the "
        f"{HEALTH_CHECK_TIMEOUT:g} s health-check timeout)"
    )


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def fill(cluster: LocalCluster, db: valkey.Valkey) -> list[str]:
    """Submit from many clients (each within its budget) until the queue
    bound answers 503; nothing drains the queue."""
    before = db.info("memory")
    sources = [f"127.0.2.{n}" for n in range(1, 201)]
    jobs = [source for source in sources for _ in range(BURST)][: MAX_PENDING + 1000]
    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(lambda s: submit(cluster.url, s), jobs))
    full = [a for a in answers if a.status == 503]
    after = db.info("memory")
    said = "yes" if full and all("the queue is full" in a.json()["detail"] for a in full) else "no"
    retry = sorted({a.headers.get("retry-after") for a in full})
    maxmemory = int(after["maxmemory"])
    return [
        f"| {len(jobs)} `POST /task` from {len(jobs) // BURST} clients, "
        f"`WIZARD_MAX_PENDING={MAX_PENDING}`, no workers | "
        f"{sum(a.status == 202 for a in answers)} accepted, {len(full)} answered 503 "
        f'(all "the queue is full": {said}; `Retry-After` {", ".join(retry)} s), '
        f"other: {sum(a.status not in (202, 503) for a in answers)} |",
        f"| queue length afterwards | {db.llen(store.TASK_QUEUE)} |",
        f"| Valkey memory before / after / maxmemory | "
        f"{mb(before['used_memory'])} / {mb(after['used_memory'])} / {mb(maxmemory)} "
        f"({100 * int(after['used_memory']) / maxmemory:.1f} % full) |",
    ]


def mb(count) -> str:
    return f"{int(count) / 2**20:.1f} MB"


def fuzzing(var_dir: Path) -> list[str]:
    """The fuzz suite's run, on the fuzz suite's cluster (no per-address
    limits at the gateway: the app is fuzzed, not the rate limiter)."""
    with fuzz_cluster(var_dir, WIZARD_LOG_LEVEL="warning") as cluster:
        report = fuzz(cluster.url, examples=EXAMPLES, seconds=SECONDS, admin_token=ADMIN_TOKEN)
    by_status = ", ".join(f"{code}: {count}" for code, count in sorted(report.statuses.items()))
    return [
        f"| schemathesis, {report.operations} operations, positive and negative cases, "
        f"through the gateway | {report.requests} requests in {report.seconds:.0f} s "
        f"({by_status}) |",
        f"| answers of 5xx / errors that are not problem+json / no answer | "
        f"{len(report.server_errors)} / {len(report.not_problems)} / {len(report.no_answer)} |",
    ]


def measure() -> str:
    """Run everything; the Markdown table."""
    with tempfile.TemporaryDirectory(prefix="edge-node-") as scratch:
        cluster = limits_cluster(Path(scratch) / "limits")
        with cluster:
            db = valkey.Valkey.from_url(cluster.admin_url, decode_responses=True)
            try:
                rows = budgets(cluster, db) + flood(cluster) + fill(cluster, db)
            finally:
                db.close()
        rows += remedies(Path(scratch) / "remedies")
        rows += fuzzing(Path(scratch) / "fuzz")
    header = ["| what | measured |", "| --- | --- |"]
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    note = (
        f"Measured {stamp} by `make edge-figures` (benchmarks/edge_node.py) on this "
        f"{os.cpu_count()}-core machine, load average at the end {load}: latencies are "
        "wall-clock and shared the cores with everything else running."
    )
    return "\n".join([note, "", *header, *rows])


def rewrite(table: str) -> None:
    """Put ``table`` between the markers of docs/edge.md."""
    text = DOC.read_text()
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise SystemExit(f"{DOC} has no {START} ... {END} markers")
    DOC.write_text(pattern.sub(lambda _: f"{START}\n{table}\n{END}", text))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--print", action="store_true", help="do not rewrite docs/edge.md")
    options = parser.parse_args()
    table = measure()
    print(table)
    if not options.print:
        rewrite(table)


if __name__ == "__main__":
    main()
