"""Threads against processes: why a node runs its workers as processes.

``WIZARD_WORK_SECONDS`` is CPU work in pure Python (see
:func:`wizard.operations.simulate_work`), so it holds the interpreter lock
(GIL) while it runs. This script measures what follows, on one real node of
a :class:`~wizard.cluster.LocalCluster` (Valkey, 1 node, nginx), 127.0.0.1
only:

1. Processes. The same prefilled tasks are drained by 1 worker process,
   then by 2 (held aside until every worker heartbeats, then released at
   once), twice each, interleaved; the fastest drain of each is kept. Rate =
   tasks / (last ``finished_at`` - first ``started_at``). On 2 idle cores,
   2 processes drain at about twice the rate of one.
2. Threads. ``GET /add`` sent to the node's API directly (its 8 request
   threads, no workers running): first one at a time, then N at once.
   Each of the N takes about N times as long as one alone: the threads
   take turns on the one interpreter lock.

The baselines (1 worker; 1 request alone) are measured in the same run, and
the figures are ratios to them. It writes ``benchmarks/gil-results.json``
and the section between the ``gil`` markers of the project's README.md.
About a minute on 2 idle cores; everything it starts is stopped by PID::

    .venv/bin/python benchmarks/gil.py            # measure and write
    .venv/bin/python benchmarks/gil.py --quick    # print only
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from run import (
    HOST,
    in_progress,
    leftovers,
    machine,
    machine_busy_seconds,
    start_nodes,
    stop_nodes,
)

from wizard import queue, store
from wizard.cluster import LocalCluster, free_port
from wizard.config import Settings

HERE = Path(__file__).resolve().parent
RESULTS_JSON = HERE / "gil-results.json"
README = HERE.parent / "README.md"

#: The node's name in the cluster (one node only).
NODE = "node-1"

#: Queue holding the prefilled tasks while the workers start.
HELD_QUEUE = "bench:held"

#: Longest wait for a drain, seconds.
DRAIN_TIMEOUT = 300.0


@dataclass(frozen=True)
class Plan:
    """How much to measure."""

    #: CPU seconds of one operation (WIZARD_WORK_SECONDS on the node).
    work_seconds: float = 0.25
    #: Tasks drained by each worker count.
    tasks: int = 16
    #: Worker process counts compared (the first is the baseline).
    workers: tuple[int, ...] = (1, 2)
    #: Drains of each worker count (the fastest is kept).
    drain_rounds: int = 2
    #: Requests sent at once to one node's threads (1 is the baseline).
    concurrency: tuple[int, ...] = (1, 2, 4)
    #: Rounds of each concurrency level (the median is kept).
    rounds: int = 3


QUICK = Plan(tasks=8, concurrency=(1, 4), rounds=1, drain_rounds=1)


# --- 1. processes ------------------------------------------------------------


def drain(cluster: LocalCluster, client, plan: Plan, workers: int) -> dict:
    """Prefill ``plan.tasks`` tasks, start the node with ``workers`` worker
    processes, release the tasks at once and time the drain."""
    stop_nodes(cluster, [NODE])
    cluster.workers = workers
    client.delete(HELD_QUEUE)
    task_ids = [queue.submit(client, "add", 1, 2, accepted_by="bench") for _ in range(plan.tasks)]
    client.rename(store.TASK_QUEUE, HELD_QUEUE)
    start_nodes(cluster, [NODE])
    client.rename(HELD_QUEUE, store.TASK_QUEUE)
    deadline = time.monotonic() + DRAIN_TIMEOUT
    while in_progress(client, cluster):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{workers} workers did not drain {plan.tasks} tasks in time")
        time.sleep(0.05)
    with client.pipeline(transaction=False) as pipe:
        for task_id in task_ids:
            pipe.hmget(store.task_key(task_id), "status", "started_at", "finished_at")
        rows = pipe.execute()
    done = [(float(row[1]), float(row[2])) for row in rows if row[0] == "complete"]
    first = min(started for started, _ in done)
    last = max(finished for _, finished in done)
    return {
        "workers": workers,
        "tasks": len(task_ids),
        "complete": len(done),
        "seconds": last - first,
        "tasks_per_second": len(done) / (last - first),
        "seconds_per_task_median": statistics.median(end - start for start, end in done),
    }


def drain_phase(cluster: LocalCluster, client, plan: Plan) -> list[dict]:
    """Each worker count drains ``plan.drain_rounds`` times, interleaved
    (1, 2, 1, 2); the fastest drain of each is kept: other programs on the
    machine only ever slow a drain down, so the fastest is the least
    disturbed. Every drain is in the record."""
    runs: dict[int, list[dict]] = {workers: [] for workers in plan.workers}
    for _ in range(plan.drain_rounds):
        for workers in plan.workers:
            runs[workers].append(drain(cluster, client, plan, workers))
            print(f"{workers} worker(s): {runs[workers][-1]['tasks_per_second']:.2f} tasks/s")
    return [
        {**max(drains, key=lambda d: d["tasks_per_second"]), "drains": drains}
        for drains in runs.values()
    ]


# --- 2. threads --------------------------------------------------------------


def one_add(base_url: str) -> float:
    """One ``GET /add`` to the node; returns its wall time, seconds."""
    started = time.perf_counter()
    with urllib.request.urlopen(f"{base_url}/add?a=1&b=2", timeout=120) as answer:
        answer.read()
    return time.perf_counter() - started


def at_once(base_url: str, count: int) -> float:
    """``count`` requests sent together; returns the mean time each took, seconds."""
    with ThreadPoolExecutor(max_workers=count) as pool:
        times = list(pool.map(lambda _: one_add(base_url), range(count)))
    return statistics.mean(times)


def threads_phase(cluster: LocalCluster, plan: Plan) -> list[dict]:
    """The node without workers; ``GET /add`` at each concurrency level."""
    stop_nodes(cluster, [NODE])
    cluster.workers = 0
    start_nodes(cluster, [NODE])
    base_url = f"http://{HOST}:{cluster.node_ports[NODE]}"
    one_add(base_url)  # warm-up: the first request opens the Valkey pool
    # Rounds interleave the levels (1, 2, 4, 1, 2, 4...), so background load
    # that comes and goes falls on every level alike; the median is kept.
    samples: dict[int, list[float]] = {count: [] for count in plan.concurrency}
    for _ in range(plan.rounds):
        for count in plan.concurrency:
            samples[count].append(at_once(base_url, count))
    return [
        {"at_once": count, "seconds_each": statistics.median(times), "samples": times}
        for count, times in samples.items()
    ]


# --- report ------------------------------------------------------------------


def figures(record: dict) -> list[str]:
    """The README lines: each figure with its ratio to the baseline."""
    drains = record["processes"]
    base = drains[0]["tasks_per_second"]
    lines = [
        "| measured | value | ratio to the baseline |",
        "| --- | --- | --- |",
    ]
    for line in drains:
        lines.append(
            f"| {line['tasks']} tasks drained by {line['workers']} worker process(es), "
            f"fastest of {len(line['drains'])} | "
            f"{line['tasks_per_second']:.2f} tasks/s | "
            f"{line['tasks_per_second'] / base:.2f}x |"
        )
    alone = record["threads"][0]["seconds_each"]
    for line in record["threads"]:
        lines.append(
            f"| {line['at_once']} `GET /add` at once on one node's threads | "
            f"{line['seconds_each']:.2f} s each | {line['seconds_each'] / alone:.2f}x |"
        )
    return lines


def write_readme(record: dict) -> None:
    """Replace the text between the gil markers of README.md."""
    start, end = "<!-- gil:start -->", "<!-- gil:end -->"
    host = record["machine"]
    load = ", ".join(f"{x:.2f}" for x in host["load_average_at_start"])
    section = "\n".join(
        [
            start,
            f"Measured by `benchmarks/gil.py` on {host['date']}: {host['nproc']} cores "
            f"({host['cpu']}), Python {host['python']}, `WIZARD_WORK_SECONDS="
            f"{record['plan']['work_seconds']:g}`; load average at start {load}, at the end "
            f"{', '.join(f'{x:.2f}' for x in record['machine']['load_average_at_end'])}; "
            f"cores busy on average during the run, all programs together: "
            f"{host['busy_cores']:.2f} of {host['nproc']} (when other programs keep the cores "
            "busy, the workers cannot have one each and the process ratios drift towards 1).",
            "",
            *figures(record),
            end,
        ]
    )
    text = README.read_text()
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.DOTALL)
    README.write_text(pattern.sub(lambda _: section, text))


def _exit_on_sigterm(signum, frame) -> None:
    # Unwind through the finally blocks, which stop everything by PID.
    raise SystemExit(143)


def run(plan: Plan) -> dict:
    """Start, measure, stop; returns the record written to gil-results.json."""
    began = time.perf_counter()
    busy_before = machine_busy_seconds()
    host = machine()
    seen: set[int] = set()
    with tempfile.TemporaryDirectory(prefix="wizard-gil-") as tmp:
        cluster = LocalCluster(
            gateway_port=free_port(HOST),
            nodes=1,
            workers=1,
            var_dir=Path(tmp) / "cluster",
            node_env={
                "WIZARD_WORK_SECONDS": str(plan.work_seconds),
                "WIZARD_LOG_LEVEL": "warning",
                "WIZARD_TASK_TIMEOUT": "600",
                # Every request of the largest level runs at once (none gets a 503).
                "WIZARD_SYNC_SLOTS": str(max(plan.concurrency)),
            },
        )
        try:
            cluster.start()
            seen.update(cluster.pids())
            client = store.connect(Settings(valkey_url=cluster.admin_url))
            processes = drain_phase(cluster, client, plan)
            seen.update(cluster.pids())
            threads = threads_phase(cluster, plan)
            seen.update(cluster.pids())
            for line in threads:
                print(f"{line['at_once']} at once: {line['seconds_each']:.2f} s each")
            client.close()
        finally:
            seen.update(cluster.pids())
            cluster.stop()
    seconds = time.perf_counter() - began
    busy_cores = (machine_busy_seconds() - busy_before) / seconds
    return {
        "machine": {**host, "load_average_at_end": os.getloadavg(), "busy_cores": busy_cores},
        "plan": plan.__dict__,
        "processes": processes,
        "threads": threads,
        "run_seconds": seconds,
        "left_running": leftovers(seen),
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a shorter run; writes nothing")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    record = run(QUICK if args.quick else Plan())
    print("\n".join(figures(record)))
    if record["left_running"]:
        print(f"still running after the stop: {record['left_running']}", file=sys.stderr)
        return 1
    if not args.quick:
        RESULTS_JSON.write_text(json.dumps(record, indent=2, default=str) + "\n")
        write_readme(record)
        print(f"wrote {RESULTS_JSON} and the gil section of {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
