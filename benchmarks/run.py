"""Benchmarks: throughput and latency of the wizard against their ceilings
and against the task queues people use instead.

``make bench`` runs this file. In one run, on 127.0.0.1 only, it starts a
real :class:`~wizard.cluster.LocalCluster` (Valkey, 3 nodes, nginx;
``WIZARD_WORK_SECONDS=0``) and, beside it, the ceilings measured on the same
machine at the same time:

1. HTTP requests per second through the gateway, ``POST /task`` and
   ``GET /whoami``, against a hello-world WSGI app on waitress (3 instances,
   same thread count) behind the same nginx configuration. One closed-loop
   keep-alive client (:mod:`loadgen`) drives both, in interleaved slices.
   The nodes run without workers here (``WIZARD_WORKERS=0``): this figure is
   the producer's; the consumers have their own (3.), and on 2 cores they
   would otherwise take CPU from the producer being measured.
2. Submit-to-complete latency of single tasks on the idle cluster (p50,
   p99, from each task's own ``created_at``/``finished_at``), against the
   same trip made by a bare producer and consumer.
3. Tasks per second drained from a prefilled queue by node-1 with 1 and 2
   worker processes, and with 1 worker and ``WIZARD_BATCH=32``, against a
   bare valkey-py BLMOVE/HSET/LREM loop (:mod:`ceilings`) with as many
   processes; Valkey's commands, CPU and bytes per task; the node's RSS.
4. The same drain by Dramatiq, Huey, RQ and Celery (:mod:`peers`), each on
   its own fresh Valkey, with 1 and 2 processes.

It prints the tables, writes ``benchmarks/results.json`` and the results
section of ``benchmarks/README.md``, and stops everything it started, by
PID. Bounded: about eight to ten minutes on a busy 2-core machine::

    .venv/bin/python benchmarks/run.py            # what make bench runs
    .venv/bin/python benchmarks/run.py --quick    # shorter, for trying changes
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import ceilings
import loadgen
import peers
from tqdm import tqdm

from wizard import queue, store
from wizard.cluster import LocalCluster, Part, children_of, free_port, http_ok, wait_until
from wizard.config import Settings

HERE = Path(__file__).resolve().parent
RESULTS_JSON = HERE / "results.json"
README = HERE / "README.md"
HOST = "127.0.0.1"

#: Environment of every node: no simulated work, quiet logs.
# The queue bound is raised so a 2.5 s slice of POST /task at full speed, with
# no workers draining it, is never refused as "the queue is full".
NODE_ENV = {
    "WIZARD_WORK_SECONDS": "0",
    "WIZARD_LOG_LEVEL": "warning",
    "WIZARD_MAX_PENDING": "1000000",
}
NODES = 3

#: Concurrent keep-alive connections of the load generator (more than the
#: 3 x 8 request threads behind the gateway, so none of them idles).
CONNECTIONS = 32

#: Queue holding the prefilled tasks while the nodes start (renamed to
#: ``task_queue`` once every worker is ready, so all start together).
HELD_QUEUE = "bench:held"

#: Longest wait for a queue to empty, seconds.
DRAIN_TIMEOUT = 240.0


@dataclass(frozen=True)
class Plan:
    """How much to measure: slices of HTTP load, tasks, samples."""

    rounds: int = 4
    slice_seconds: float = 2.5
    warmup_seconds: float = 0.5
    drain_tasks: int = 20_000
    latency_samples: int = 200


QUICK = Plan(rounds=1, slice_seconds=1.5, drain_tasks=2000, latency_samples=60)


@dataclass(frozen=True)
class Figure:
    """One line of the table. ``ratio`` is value/ceiling for rates and
    floor/value for latencies, so 1.0 is always "as good as the ceiling".
    ``target`` is the goal as text; ``passed`` is None when there is none."""

    name: str
    unit: str
    value: float
    ceiling: float
    ratio: float
    target: str
    passed: bool | None

    def row(self) -> list[str]:
        verdict = {True: "pass", False: "FAIL", None: "-"}[self.passed]
        return [
            self.name,
            f"{self.value:,.{_digits(self.unit)}f} {self.unit}",
            f"{self.ceiling:,.{_digits(self.unit)}f} {self.unit}",
            f"{self.ratio:.3f}",
            self.target,
            verdict,
        ]


def _digits(unit: str) -> int:
    return {"ms": 3, "cmds": 2, "us": 1}.get(unit, 0)


# --- the systems under test ----------------------------------------------


class HelloGateway:
    """Three hello-world waitress processes (benchmarks/hello.py) behind an
    nginx written by LocalCluster's own writer: the same ops/nginx includes,
    an upstream of the three ports, one worker process, the same access log."""

    def __init__(self, var_dir: Path) -> None:
        self.servers = []
        for n in range(1, NODES + 1):
            argv = [sys.executable, str(HERE / "hello.py"), str(free_port(HOST))]
            self.servers.append(Part(f"hello-{n}", argv, var_dir / "logs" / f"hello-{n}.log"))
        # A LocalCluster that never starts its own nodes or Valkey: only its
        # gateway, pointed at the hello-world ports.
        # Its per-address limits are off, like the cluster's below: the load
        # comes from one address, and the limits are not what is measured.
        self.nginx = LocalCluster(
            gateway_port=free_port(HOST), nodes=0, var_dir=var_dir, gateway_limits=False
        )
        self.nginx.node_ports = {s.name: int(s.argv[-1]) for s in self.servers}

    @property
    def port(self) -> int:
        """The gateway's port."""
        return self.nginx.gateway_port

    def start(self) -> None:
        """Start the servers, wait until each answers, then start nginx.

        Raises:
            wizard.cluster.ClusterError: a part exited or was not ready in time.
        """
        for server in self.servers:
            server.start()
        for server in self.servers:
            url = f"http://{HOST}:{server.argv[-1]}/"
            wait_until(lambda url=url: http_ok(url), server.name, process=server.process)
        self.nginx.start_gateway()

    def parts(self) -> list[Part]:
        """Every process started (nginx first)."""
        return [*self.nginx.parts(), *self.servers]

    def stop(self) -> None:
        """Stop nginx, then the servers, by PID (again is harmless)."""
        self.nginx.stop()
        for server in self.servers:
            server.stop(signal.SIGTERM, timeout=10)


def worker_ids(cluster: LocalCluster) -> list[str]:
    """Every worker id of the cluster (``node-1/w1`` ...)."""
    return [f"{node}/w{n}" for node in cluster.node_ports for n in range(1, cluster.workers + 1)]


def in_progress(client, cluster: LocalCluster) -> int:
    """Tasks waiting or being worked on: the queue plus every processing list."""
    with client.pipeline(transaction=False) as pipe:
        pipe.llen(store.TASK_QUEUE)
        for worker_id in worker_ids(cluster):
            pipe.llen(store.processing_key(worker_id))
        return sum(pipe.execute())


def wait_idle(client, cluster: LocalCluster, timeout: float = DRAIN_TIMEOUT) -> float:
    """Wait until no task is queued or in progress; returns the seconds it took.

    Raises:
        RuntimeError: still busy after ``timeout`` seconds.
    """
    started = time.perf_counter()
    while in_progress(client, cluster):
        if time.perf_counter() - started > timeout:
            raise RuntimeError(f"the cluster still had tasks after {timeout:g} s")
        time.sleep(0.02)
    return time.perf_counter() - started


def stop_nodes(cluster: LocalCluster, names: list[str]) -> None:
    """Stop nodes gracefully and in parallel: one SIGTERM to each node's
    supervisor PID, then wait for each (SIGKILL after 30 s)."""
    running = [cluster.nodes[name] for name in names if cluster.nodes[name].alive()]
    for part in running:
        part.process.send_signal(signal.SIGTERM)
    for part in running:
        try:
            part.process.wait(30)
        except subprocess.TimeoutExpired:
            # Stuck past every grace period: kill it by PID.
            part.process.kill()
            part.process.wait()


def start_nodes(cluster: LocalCluster, names: list[str]) -> None:
    """Start nodes together and wait until each answers /readyz (its workers
    heartbeat, so they are blocked on the queue)."""
    for name in names:
        cluster.start_node(name)
    for name in names:
        cluster.wait_node_ready(name)


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) used so far by process ``pid``, seconds
    (0 if it is gone). Linux /proc/<pid>/stat, fields 14 and 15."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        # It exited: it uses no more CPU.
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU time used so far by every process on the machine, all cores
    together, seconds (/proc/stat: all but idle and iowait)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def hello_roles(hello: HelloGateway) -> dict[str, list[int]]:
    """PIDs of the hello-world side by role."""
    nginx = hello.nginx.gateway.pid
    return {"nginx": [nginx, *children_of(nginx)], "app": [s.pid for s in hello.servers]}


def cluster_roles(cluster: LocalCluster, client) -> dict[str, list[int]]:
    """PIDs of the cluster by role: nginx, api, worker, valkey, other
    (supervisors, schedulers, multiprocessing's resource trackers)."""
    nginx = cluster.gateway.pid
    roles = {"nginx": [nginx, *children_of(nginx)], "valkey": [cluster.valkey.pid]}
    roles["api"] = [api_pid(cluster.node_url(name)) for name in cluster.node_ports]
    cards = client.hmget(store.WORKER_REGISTRY, worker_ids(cluster)) if cluster.workers else []
    roles["worker"] = [json.loads(card)["pid"] for card in cards if card]
    known = {pid for pids in roles.values() for pid in pids}
    roles["other"] = [pid for pid in cluster.pids() if pid not in known]
    return roles


def api_pid(node_url: str) -> int:
    """The PID of a node's API process, as its /whoami tells."""
    with urllib.request.urlopen(node_url + "/whoami", timeout=2) as answer:
        return json.loads(answer.read())["pid"]


def cpu_by_role(roles: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds used so far by each role's processes together."""
    return {role: sum(cpu_seconds(pid) for pid in pids) for role, pids in roles.items()}


class Meter:
    """CPU time spent while a ``with`` block runs: by each role's PIDs, by
    this process and the children it reaped (``client``), and by every
    other process on the machine (:attr:`other_cores`, in cores), so a
    figure taken while other jobs ran says so."""

    def __init__(self, roles: dict[str, list[int]]) -> None:
        self.roles = roles
        self.used: dict[str, float] = {}
        self.other_cores = 0.0
        self._start: tuple = ()

    def _sample(self) -> tuple[float, dict[str, float], float]:
        own = resource.getrusage(resource.RUSAGE_SELF)
        reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
        client = own.ru_utime + own.ru_stime + reaped.ru_utime + reaped.ru_stime
        return (
            time.perf_counter(),
            {**cpu_by_role(self.roles), "client": client},
            machine_busy_seconds(),
        )

    def __enter__(self) -> Meter:
        self._start = self._sample()
        return self

    def __exit__(self, *exc_info) -> None:
        (t0, used0, busy0), (t1, used1, busy1) = self._start, self._sample()
        self.used = {role: used1[role] - used0[role] for role in used1}
        self.other_cores = round(max(0.0, busy1 - busy0 - sum(self.used.values())) / (t1 - t0), 2)

    def per(self, count: int) -> dict[str, float]:
        """CPU time per item (request, task) by role, microseconds."""
        return {
            role: round(seconds * 1e6 / max(count, 1), 1) for role, seconds in self.used.items()
        }


# --- 1. HTTP -------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One HTTP endpoint to load: where, what request, which status is
    success, and the PIDs (by role) whose CPU time the requests cost."""

    label: str
    port: int
    method: str
    path: str
    expect: int
    roles: dict


def http_phase(plan: Plan, hello: HelloGateway, cluster: LocalCluster, client) -> dict:
    """Interleave slices of load on the hello world and on the wizard, in
    alternating order each round (ABBA), so drifting background load on the
    machine falls on both alike. Returns totals and per-slice results."""
    task_path = "/task?a=1&b=2&operation=add"
    ours, theirs = hello_roles(hello), cluster_roles(cluster, client)
    gateway = cluster.gateway_port
    targets = [
        Target("hello GET", hello.port, "GET", "/whoami", 200, ours),
        Target("wizard GET /whoami", gateway, "GET", "/whoami", 200, theirs),
        Target("hello POST", hello.port, "POST", task_path, 200, ours),
        Target("wizard POST /task", gateway, "POST", task_path, 202, theirs),
    ]
    slices = {t.label: [] for t in targets}
    bar = tqdm(total=plan.rounds * len(targets), desc="HTTP slices", unit="slice", leave=False)
    for round_number in range(plan.rounds):
        order = targets if round_number % 2 == 0 else targets[::-1]
        for target in order:
            slices[target.label].append(http_slice(plan, target, cluster, client))
            bar.set_postfix_str(f"{target.label}: {slices[target.label][-1]['rate']:,.0f}/s")
            bar.update()
    bar.close()
    return {label: _totals(found) for label, found in slices.items()}


def http_slice(plan: Plan, target: Target, cluster: LocalCluster, client) -> dict:
    """One slice of closed-loop load on ``target``. After a slice of
    ``POST /task`` waits for the workers to finish the tasks it made, and
    counts their CPU time too (``cpu_us_per_request``, by role)."""
    request = loadgen.http_request(target.method, target.path, f"{HOST}:{target.port}")
    found = {}
    with Meter(target.roles) as meter:
        result = loadgen.closed_loop(
            HOST,
            target.port,
            request,
            expect=target.expect,
            connections=CONNECTIONS,
            seconds=plan.slice_seconds,
            warmup=plan.warmup_seconds,
        )
        if target.expect == 202:
            # No consumers in this phase: drop what the slice queued.
            found["tasks_queued"] = client.llen(store.TASK_QUEUE)
            client.flushdb()
    return {
        "requests": result.requests,
        "errors": result.errors,
        "seconds": result.seconds,
        "rate": result.rate,
        **found,
        "client_cores": round(result.client_cores, 3),
        "other_processes_cores": meter.other_cores,
        "cpu_us_per_request": meter.per(result.answered),
    }


def _totals(slices: list[dict]) -> dict:
    requests = sum(s["requests"] for s in slices)
    seconds = sum(s["seconds"] for s in slices)
    roles = slices[0]["cpu_us_per_request"]
    cpu = {role: _mean(s["cpu_us_per_request"][role] for s in slices) for role in roles}
    return {
        "rate": requests / seconds,
        "requests": requests,
        "errors": sum(s["errors"] for s in slices),
        "seconds": seconds,
        "other_processes_cores": _mean(s["other_processes_cores"] for s in slices),
        "cpu_us_per_request": cpu,
        "slices": slices,
    }


def _mean(values) -> float:
    values = list(values)
    return round(sum(values) / len(values), 1)


# --- 2. drain ------------------------------------------------------------

#: Worker processes of the drains (one node), and the batch of the batch run.
DRAIN_PROCESSES = (1, 2)
BATCH = 32


def drain_phase(plan: Plan, cluster: LocalCluster, client) -> dict:
    """Tasks per second drained by node-1 with 1 and with 2 worker
    processes, each against the bare loop with as many processes (measured
    just before); then 1 worker with
    ``WIZARD_BATCH=32``. Expects every node stopped and leaves them stopped."""
    found = {}
    for processes in DRAIN_PROCESSES:
        loop = bare(cluster, plan, processes)
        wizard = drain_node(plan, cluster, client, processes=processes, batch=1)
        found[f"{processes} worker" + ("s" if processes > 1 else "")] = {
            **wizard,
            "bare_rate_per_process": loop["rate_per_process"],
            "bare_valkey": loop["valkey"],
            "bare_runs": [loop],
        }
    batch = drain_node(plan, cluster, client, processes=1, batch=BATCH)
    found[f"1 worker, batch {BATCH}"] = {
        **batch,
        "bare_rate_per_process": found["1 worker"]["bare_rate_per_process"],
        "bare_valkey": found["1 worker"]["bare_valkey"],
    }
    return found


def bare(cluster: LocalCluster, plan: Plan, processes: int) -> dict:
    """The bare loop's drain of as many tasks, by ``processes`` processes
    (their CPU time is in ``client``: they are this process's children),
    with Valkey's commands and CPU per task."""
    valkey_client = store.connect(Settings(valkey_url=cluster.admin_url))
    start = peers.ServerStats.read(valkey_client)
    with Meter({"valkey": [cluster.valkey.pid]}) as meter:
        found = ceilings.bare_drain(cluster.admin_url, tasks=plan.drain_tasks, processes=processes)
    end = peers.ServerStats.read(valkey_client)
    valkey_client.close()
    return {
        "rate_per_process": found.rate_per_process,
        "other_processes_cores": meter.other_cores,
        "cpu_us_per_task": meter.per(found.tasks),
        "valkey": peers.per_task(start, end, found.tasks),
    }


def drain_node(plan: Plan, cluster: LocalCluster, client, *, processes: int, batch: int) -> dict:
    """Prefill ``drain_tasks`` tasks with wizard.queue.submit, hold them
    aside while node-1 starts with ``processes`` workers taking ``batch``
    at a time, release them at once and time the drain from the first
    ``started_at`` to the last ``finished_at``. Also: Valkey's commands,
    CPU and bytes per task, and the node's memory (RSS by process)."""
    node = next(iter(cluster.node_ports))
    cluster.workers = processes
    cluster.node_env["WIZARD_BATCH"] = str(batch)
    # SYNC: Valkey frees a flushed database in the background by default,
    # and the empty reading below must not include the last drain's tasks.
    client.execute_command("FLUSHDB", "SYNC")
    empty = peers.ServerStats.read(client)
    task_ids = prefill(client, plan.drain_tasks, f"prefill for {processes}")
    pending = peers.ServerStats.read(client)
    client.rename(store.TASK_QUEUE, HELD_QUEUE)
    start_nodes(cluster, [node])
    roles = queue_roles(cluster, client, [node])
    idle = idle_background(client, cluster)
    start = peers.ServerStats.read(client)
    label = f"drain by {processes}" + (f", batch {batch}" if batch > 1 else "")
    with (
        Meter(roles) as meter,
        tqdm(total=len(task_ids), desc=label, leave=False) as bar,
    ):
        client.rename(HELD_QUEUE, store.TASK_QUEUE)
        released = time.perf_counter()
        while left := in_progress(client, cluster):
            bar.update(len(task_ids) - left - bar.n)
            time.sleep(0.05)
    end = peers.ServerStats.read(client)
    drained_seconds = time.perf_counter() - released
    rss = node_rss(cluster, client, node)
    stop_nodes(cluster, [node])
    cluster.node_env.pop("WIZARD_BATCH")
    with client.pipeline(transaction=False) as pipe:
        for task_id in task_ids:
            pipe.hmget(store.task_key(task_id), "status", "started_at", "finished_at", "result")
        rows = pipe.execute()
    complete = [row for row in rows if row[0] == queue.TaskStatus.COMPLETE.value]
    if len(complete) != len(task_ids) or any(row[3] != "3" for row in complete):
        raise RuntimeError(f"{label}: {len(task_ids) - len(complete)} tasks not complete and 3")
    first = min(float(row[1]) for row in complete)
    last = max(float(row[2]) for row in complete)
    pending_bytes = (pending.used_memory - empty.used_memory) / len(task_ids)
    return {
        "tasks": len(task_ids),
        "complete": len(complete),
        "processes": processes,
        "batch": batch,
        "seconds": last - first,
        "rate": len(complete) / (last - first),
        "rate_per_process": len(complete) / (last - first) / processes,
        "other_processes_cores": meter.other_cores,
        "cpu_us_per_task": meter.per(len(task_ids)),
        "valkey": {
            # Counted between release and drained, less what the idle node
            # (scheduler, heartbeats) and this script's polling cost in the
            # same time, measured just before the release.
            **peers.per_task(start, idle.discount(end, drained_seconds), len(task_ids)),
            "raw": peers.per_task(start, end, len(task_ids)),
            "idle_commands_per_second": round(idle.commands_per_second, 1),
            "bytes_per_pending_task": round(pending_bytes),
            "bytes_per_completed_task": round(
                pending_bytes + (end.used_memory - pending.used_memory) / len(task_ids)
            ),
        },
        "node_rss_kib": rss,
    }


@dataclass(frozen=True)
class Idle:
    """What Valkey does per second for an idle node and this script's
    polling: commands and CPU seconds."""

    commands_per_second: float
    cpu_per_second: float

    def discount(self, end: peers.ServerStats, seconds: float) -> peers.ServerStats:
        """``end`` less ``seconds`` of this background."""
        return peers.ServerStats(
            commands=end.commands - round(self.commands_per_second * seconds),
            cpu_seconds=end.cpu_seconds - self.cpu_per_second * seconds,
            used_memory=end.used_memory,
        )


#: How long the idle background is measured before a drain, seconds.
IDLE_SECONDS = 1.0


def idle_background(client, cluster: LocalCluster) -> Idle:
    """Valkey's commands and CPU per second while the node idles (tasks held
    aside) and this script polls as it does during a drain."""
    before = peers.ServerStats.read(client)
    started = time.perf_counter()
    while time.perf_counter() - started < IDLE_SECONDS:
        in_progress(client, cluster)
        time.sleep(0.05)
    after = peers.ServerStats.read(client)
    seconds = time.perf_counter() - started
    # The INFO reads themselves: three commands at each end.
    commands = after.commands - before.commands - 3
    return Idle(commands / seconds, (after.cpu_seconds - before.cpu_seconds) / seconds)


def prefill(client, count: int, label: str) -> list[str]:
    """``count`` tasks made with wizard.queue.submit (as POST /task does)."""
    return [
        queue.submit(client, "add", 1, 2, accepted_by="bench")
        for _ in tqdm(range(count), desc=label, leave=False)
    ]


def rss_kib(pid: int) -> int:
    """Resident memory of process ``pid``, KiB (/proc/<pid>/status VmRSS;
    0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except FileNotFoundError:
        # It exited meanwhile.
        return 0
    return 0


def node_rss(cluster: LocalCluster, client, node: str) -> dict[str, int]:
    """Resident memory of each process of ``node``, KiB: its supervisor,
    API, each worker, and the rest (scheduler, multiprocessing's helper)."""
    supervisor = cluster.nodes[node].pid
    api = api_pid(cluster.node_url(node))
    ids = [f"{node}/w{n}" for n in range(1, cluster.workers + 1)]
    workers = [json.loads(card)["pid"] for card in client.hmget(store.WORKER_REGISTRY, ids)]
    found = {"supervisor": rss_kib(supervisor), "api": rss_kib(api)}
    for n, pid in enumerate(workers, start=1):
        found[f"worker {n}"] = rss_kib(pid)
    for pid in children_of(supervisor):
        if pid not in (api, *workers):
            found[f"other ({process_name(pid)})"] = rss_kib(pid)
    found["total"] = sum(found.values())
    return found


def process_name(pid: int) -> str:
    """A short name for ``pid`` from its command line (scheduler, ...)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        # It exited meanwhile.
        return "gone"
    text = b" ".join(argv).decode(errors="replace")
    return "resource tracker" if "resource_tracker" in text else "scheduler"


def peer_phase(plan: Plan, var_dir: Path) -> dict:
    """Each peer's drain of ``drain_tasks`` tasks with 1 and 2 processes,
    each on its own fresh Valkey (:mod:`peers`)."""
    found = {}
    for peer in peers.PEERS:
        for processes in DRAIN_PROCESSES:
            folder = var_dir / f"{peer.name}-{processes}"
            folder.mkdir(parents=True)
            print(f"  {peer.name} x {processes} ...", flush=True)
            found[f"{peer.name} x {processes}"] = peers.drain(
                peer, tasks=plan.drain_tasks, processes=processes, var_dir=folder
            )
    return found


def queue_roles(cluster: LocalCluster, client, nodes: list[str]) -> dict[str, list[int]]:
    """PIDs of the running ``nodes``' workers, of Valkey, and of the rest of
    the cluster (API processes, schedulers, supervisors, nginx)."""
    ids = [f"{node}/w{n}" for node in nodes for n in range(1, cluster.workers + 1)]
    workers = [json.loads(card)["pid"] for card in client.hmget(store.WORKER_REGISTRY, ids)]
    known = {*workers, cluster.valkey.pid}
    rest = [pid for pid in cluster.pids() if pid not in known]
    return {"worker": workers, "valkey": [cluster.valkey.pid], "other": rest}


# --- 3. latency ----------------------------------------------------------


def latency_phase(plan: Plan, cluster: LocalCluster, client) -> dict:
    """Submit single tasks through the gateway, one at a time on the idle
    cluster; each one's latency is ``finished_at - created_at`` from its own
    status JSON, split at ``started_at`` (waiting, then running)."""
    gateway = http.client.HTTPConnection(HOST, cluster.gateway_port, timeout=5)
    try:
        for _ in range(20):
            one_task(gateway, client)
        with Meter({"cluster": cluster.pids()}) as meter:
            rows = [
                one_task(gateway, client)
                for _ in tqdm(range(plan.latency_samples), desc="latency", leave=False)
            ]
    finally:
        gateway.close()
    total = ceilings.Latencies(tuple((r["finished_at"] - r["created_at"]) * 1000 for r in rows))
    queued = ceilings.Latencies(tuple((r["started_at"] - r["created_at"]) * 1000 for r in rows))
    running = ceilings.Latencies(tuple((r["finished_at"] - r["started_at"]) * 1000 for r in rows))
    return {
        "samples": len(rows),
        "p50_ms": total.percentile(50),
        "p99_ms": total.percentile(99),
        "created_to_started_p50_ms": queued.percentile(50),
        "started_to_finished_p50_ms": running.percentile(50),
        "other_processes_cores": meter.other_cores,
    }


def latency_floor(plan: Plan, cluster: LocalCluster) -> dict:
    """The latency of the same trip by a bare producer and consumer (run
    while the nodes are stopped, so nothing else takes the ids)."""
    floor = ceilings.bare_latency(cluster.admin_url, samples=plan.latency_samples)
    return {"bare_p50_ms": floor.percentile(50), "bare_p99_ms": floor.percentile(99)}


def one_task(gateway: http.client.HTTPConnection, client) -> dict:
    """POST one task through the gateway, wait until it ends (looking at its
    status in Valkey every ceilings.POLL_SECONDS, which leaves the cores to
    the nodes), and return its status JSON read back through the gateway.

    Raises:
        RuntimeError: the task was not accepted or did not end within 5 s.
    """
    gateway.request("POST", "/task?a=1&b=2&operation=add")
    answer = gateway.getresponse()
    body = answer.read()
    if answer.status != 202:
        raise RuntimeError(f"POST /task answered {answer.status}: {body[:200]!r}")
    task_id = json.loads(body)["task_id"]
    deadline = time.monotonic() + 5.0
    done = (queue.TaskStatus.COMPLETE.value, queue.TaskStatus.FAILED.value)
    while client.hget(store.task_key(task_id), "status") not in done:
        if time.monotonic() > deadline:
            raise RuntimeError(f"task {task_id} did not end within 5 s")
        time.sleep(ceilings.POLL_SECONDS)
    gateway.request("GET", f"/tasks/{task_id}/status")
    answer = gateway.getresponse()
    return json.loads(answer.read())


# --- the table -----------------------------------------------------------


def figures(http: dict, drain: dict, peer_runs: dict, latency: dict) -> list[Figure]:
    """The table's lines, with their targets."""
    post, whoami = http["wizard POST /task"], http["wizard GET /whoami"]
    hello_post, hello_get = http["hello POST"], http["hello GET"]
    lines = [
        _rate(
            "POST /task via gateway, 3 producers", "req/s", post["rate"], hello_post["rate"], 0.55
        ),
        _rate("GET /whoami via gateway, 3 nodes", "req/s", whoami["rate"], hello_get["rate"], 0.85),
    ]
    targets = {"1 worker": 1.0, "2 workers": 0.8, f"1 worker, batch {BATCH}": 5.0}
    for label, target in targets.items():
        found = drain[label]
        lines.append(
            _rate(
                f"drain by {label}, per process, vs bare loop",
                "tasks/s",
                found["rate_per_process"],
                found["bare_rate_per_process"],
                target,
            )
        )
    for processes in DRAIN_PROCESSES:
        label = f"{processes} worker" + ("s" if processes > 1 else "")
        best = max(
            (run for run in peer_runs.values() if run["processes"] == processes),
            key=lambda run: run["rate_per_process"],
        )
        lines.append(
            _rate(
                f"drain by {label}, per process, vs best peer ({best['peer']})",
                "tasks/s",
                drain[label]["rate_per_process"],
                best["rate_per_process"],
                2.0,
            )
        )
    ours, theirs = drain["1 worker"]["valkey"], drain["1 worker"]["bare_valkey"]
    commands = ours["commands_per_task"]
    lines.append(
        Figure(
            "Valkey commands per task, 1 worker",
            "cmds",
            commands,
            theirs["commands_per_task"],
            commands / theirs["commands_per_task"],
            "<= 8 commands",
            commands <= 8,
        )
    )
    cpu, bare_cpu = ours["valkey_cpu_us_per_task"], theirs["valkey_cpu_us_per_task"]
    lines.append(
        Figure(
            "Valkey CPU per task, 1 worker",
            "us",
            cpu,
            bare_cpu,
            cpu / bare_cpu,
            "<= 1.30x bare",
            cpu <= 1.3 * bare_cpu,
        )
    )
    p50, p99 = latency["p50_ms"], latency["p99_ms"]
    lines.append(
        Figure(
            "submit-to-complete p50",
            "ms",
            p50,
            latency["bare_p50_ms"],
            latency["bare_p50_ms"] / p50,
            "p50 <= 1 ms",
            p50 <= 1.0,
        )
    )
    lines.append(
        Figure(
            "submit-to-complete p99",
            "ms",
            p99,
            latency["bare_p99_ms"],
            latency["bare_p99_ms"] / p99,
            "-",
            None,
        )
    )
    return lines


def _rate(name: str, unit: str, value: float, ceiling: float, target: float) -> Figure:
    ratio = value / ceiling
    return Figure(name, unit, value, ceiling, ratio, f">= {target:.2f}", ratio >= target)


HEADER = ["figure", "value", "ceiling", "ratio", "target", "result"]


def table(lines: list[Figure]) -> str:
    """The figures as an aligned text table."""
    rows = [HEADER, *(line.row() for line in lines)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    text = []
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        text.append("  ".join(cells).rstrip())
    text.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(text)


def cpu_table(http: dict) -> str:
    """CPU time per HTTP request by role, microseconds: where the cores go.
    On a CPU-bound machine the rate is about cores / total, so the ratio
    of two totals predicts the ratio of two rates without background noise."""
    roles = ["client", "nginx", "app", "api", "worker", "valkey", "other"]
    rows = [["CPU us/request", *roles, "total", "other processes (cores)"]]
    for label, found in http.items():
        cpu = found["cpu_us_per_request"]
        cells = [f"{cpu[role]:.0f}" if role in cpu else "" for role in roles]
        other = f"{found['other_processes_cores']:.2f}"
        rows.append([label, *cells, f"{sum(cpu.values()):.0f}", other])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(
            cell.rjust(width) if i else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    )


def side_by_side(drain: dict, peer_runs: dict) -> list[list[str]]:
    """Rows of the side-by-side drain table: the wizard, the bare loop and
    each peer, per process count: rate per process, the wizard's ratio to
    it, Valkey commands, CPU and bytes per task."""
    header = [
        "drain (same tasks)",
        "procs",
        "tasks/s per proc",
        "wizard / this",
        "cmds/task",
        "Valkey CPU us/task",
        "bytes/pending",
        "bytes/completed",
        "checked",
    ]
    rows = [header]
    for label, found in drain.items():
        costs = found["valkey"]
        rows.append(
            [
                f"wizard, {label}",
                str(found["processes"]),
                f"{found['rate_per_process']:,.0f}",
                "1.00",
                f"{costs['commands_per_task']:.2f}",
                f"{costs['valkey_cpu_us_per_task']:.1f}",
                f"{costs['bytes_per_pending_task']}",
                f"{costs['bytes_per_completed_task']}",
                f"{found['complete']:,}/{found['tasks']:,}",
            ]
        )
    for processes in DRAIN_PROCESSES:
        label = f"{processes} worker" + ("s" if processes > 1 else "")
        ours = drain[label]["rate_per_process"]
        bare_costs = drain[label]["bare_valkey"]
        bare_rate = drain[label]["bare_rate_per_process"]
        rows.append(
            [
                "bare BLMOVE/HSET/LREM loop",
                str(processes),
                f"{bare_rate:,.0f}",
                f"{ours / bare_rate:.2f}",
                f"{bare_costs['commands_per_task']:.2f}",
                f"{bare_costs['valkey_cpu_us_per_task']:.1f}",
                "-",
                "-",
                "-",
            ]
        )
        for run in peer_runs.values():
            if run["processes"] != processes:
                continue
            rows.append(
                [
                    run["peer"],
                    str(processes),
                    f"{run['rate_per_process']:,.0f}",
                    f"{ours / run['rate_per_process']:.2f}",
                    f"{run['commands_per_task']:.2f}",
                    f"{run['valkey_cpu_us_per_task']:.1f}",
                    f"{run['bytes_per_pending_task']}",
                    f"{run['bytes_per_completed_task']}",
                    f"{run['verified']:,}/{run['tasks']:,}",
                ]
            )
    return rows


def rss_rows(drain: dict) -> list[list[str]]:
    """Resident memory of node-1's processes in each drain, KiB."""
    seen = {name for found in drain.values() for name in found["node_rss_kib"]}
    workers = sorted(name for name in seen if name.startswith("worker"))
    others = sorted(name for name in seen if name.startswith("other"))
    names = ["supervisor", "api", *workers, *others, "total"]
    rows = [["node RSS, KiB", *names]]
    for label, found in drain.items():
        rss = found["node_rss_kib"]
        rows.append([label, *(str(rss.get(name, "")) for name in names)])
    return rows


def text_table(rows: list[list[str]]) -> str:
    """Rows as aligned text (first column left, the rest right)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(
            cell.rjust(width) if i else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    )


def markdown_rows(rows: list[list[str]]) -> str:
    """Rows as a Markdown table (the first row is the header)."""
    lines = [rows[0], ["---"] * len(rows[0]), *rows[1:]]
    return "\n".join("| " + " | ".join(row) + " |" for row in lines)


def markdown(lines: list[Figure]) -> str:
    """The figures as a Markdown table."""
    rows = [HEADER, ["---"] * len(HEADER), *(line.row() for line in lines)]
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


# --- the machine and the record ------------------------------------------


def machine() -> dict:
    """Where the figures were measured: date, cores, CPU model, Python."""
    date = subprocess.run(["date"], capture_output=True, text=True, check=False).stdout.strip()
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    nproc = subprocess.run(["nproc"], capture_output=True, text=True, check=False).stdout.strip()
    return {
        "date": date,
        "nproc": int(nproc or os.cpu_count() or 0),
        "cpu": model,
        "python": platform.python_version(),
        "load_average_at_start": os.getloadavg(),
    }


def background(record: dict) -> str:
    """One sentence: how many cores other processes on the machine used
    while each part was measured (0 on a quiet machine)."""
    http = [
        s["other_processes_cores"] for found in record["http"].values() for s in found["slices"]
    ]
    drains = ", ".join(
        f"drain by {label} {found['other_processes_cores']:.2f}"
        for label, found in record["drain"].items()
    )
    return (
        f"Other processes on the machine used, in cores: HTTP slices {min(http):.2f}"
        f" to {max(http):.2f}; {drains}; latency {record['latency']['other_processes_cores']:.2f}."
    )


def write_readme(record: dict, lines: list[Figure]) -> None:
    """Replace the text between the results markers of README.md."""
    start, end = "<!-- results:start -->", "<!-- results:end -->"
    host, latency = record["machine"], record["latency"]
    section = "\n".join(
        [
            start,
            f"Measured {host['date']} on {host['nproc']} cores ({host['cpu']}), "
            f"Python {host['python']}; load average at start "
            f"{', '.join(f'{x:.2f}' for x in host['load_average_at_start'])}; "
            f"run took {record['run_seconds']:.0f} s.",
            "",
            markdown(lines),
            "",
            background(record),
            "",
            f"Latency split (p50): created to started {latency['created_to_started_p50_ms']:.3f}"
            f" ms, started to finished {latency['started_to_finished_p50_ms']:.3f} ms.",
            "",
            "```",
            cpu_table(record["http"]),
            "```",
            "",
            "The drains side by side (each peer on its own fresh Valkey; commands and CPU"
            " from Valkey's INFO commandstats and INFO cpu; bytes from INFO memory):",
            "",
            markdown_rows(side_by_side(record["drain"], record["peers"])),
            "",
            "Memory of node-1 during each drain (VmRSS, KiB):",
            "",
            markdown_rows(rss_rows(record["drain"])),
            end,
        ]
    )
    text = README.read_text() if README.exists() else f"{start}\n{end}\n"
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.DOTALL)
    README.write_text(pattern.sub(lambda _: section, text))


# --- the run ---------------------------------------------------------------


def _exit_on_sigterm(signum, frame) -> None:
    # Unwind through the finally blocks, which stop everything by PID.
    raise SystemExit(143)


def leftovers(pids: set[int]) -> list[int]:
    """Those of ``pids`` still running (not merely zombies)."""
    alive = []
    for pid in sorted(pids):
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            # Gone: good.
            continue
        if state != "Z":
            alive.append(pid)
    return alive


def run(plan: Plan) -> dict:
    """Start, measure, stop; returns the record written to results.json."""
    began = time.perf_counter()
    host = machine()
    seen: set[int] = set()
    with tempfile.TemporaryDirectory(prefix="wizard-bench-") as tmp:
        hello = HelloGateway(Path(tmp) / "hello")
        cluster = LocalCluster(
            gateway_port=free_port(HOST),
            nodes=NODES,
            workers=0,  # producers only for the HTTP phase; workers join after
            var_dir=Path(tmp) / "cluster",
            node_env=NODE_ENV,
            gateway_limits=False,
        )
        try:
            print(f"starting 3 hello worlds + nginx, and Valkey + {NODES} nodes + nginx ...")
            hello.start()
            cluster.start()
            seen.update(cluster.pids(), (p.pid for p in hello.parts()))
            client = store.connect(Settings(valkey_url=cluster.admin_url))
            http = http_phase(plan, hello, cluster, client)
            hello.stop()
            stop_nodes(cluster, list(cluster.nodes))
            cluster.workers = 1
            start_nodes(cluster, list(cluster.nodes))
            latency = latency_phase(plan, cluster, client)
            stop_nodes(cluster, list(cluster.nodes))
            latency.update(latency_floor(plan, cluster))
            drain = drain_phase(plan, cluster, client)
            seen.update(cluster.pids())
            client.close()
            print("the peers, each on its own fresh Valkey ...")
            peer_runs = peer_phase(plan, Path(tmp) / "peers")
        finally:
            seen.update(cluster.pids())
            stop_nodes(cluster, [n for n in cluster.nodes])
            cluster.stop()
            hello.stop()
    lines = figures(http, drain, peer_runs, latency)
    record = {
        "machine": {**host, "load_average_at_end": os.getloadavg()},
        "plan": plan.__dict__,
        "settings": {
            "node_env": NODE_ENV,
            "nodes": NODES,
            "workers_per_node": 1,
            "threads": Settings().threads,
            "connections": CONNECTIONS,
        },
        "figures": [line.__dict__ for line in lines],
        "http": http,
        "drain": drain,
        "peers": peer_runs,
        "latency": latency,
        "run_seconds": time.perf_counter() - began,
        "left_running": leftovers(seen),
    }
    print()
    print(table(lines))
    print()
    print(cpu_table(http))
    print()
    print(text_table(side_by_side(drain, peer_runs)))
    print()
    print(text_table(rss_rows(drain)))
    print()
    print(background(record))
    return record


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a shorter run; writes nothing")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    plan = QUICK if args.quick else Plan()
    record = run(plan)
    print(
        f"\nrun took {record['run_seconds']:.0f} s; "
        f"load average {record['machine']['load_average_at_end'][0]:.2f}"
    )
    if record["left_running"]:
        print(f"still running after the stop: {record['left_running']}", file=sys.stderr)
        return 1
    if not args.quick:
        RESULTS_JSON.write_text(json.dumps(record, indent=2, default=str) + "\n")
        write_readme(record, [Figure(**f) for f in record["figures"]])
        print(f"wrote {RESULTS_JSON.name} and {README.name} in {HERE}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
