"""Write the measured counts of the failover and network-lab scenarios into
the docs, so no figure there is typed by hand.

Each run of ``make chaos`` leaves ``var/chaos-results.json`` and
``var/netlab-results.json``. Copy several runs aside, then render them; a
figure that differs between runs shows as ``min–max``::

    python -m tests.render_results var/runs/*.json

Only the parts between ``<!-- results:NAME -->`` and ``<!-- /results:NAME -->``
in docs/chaos.md and docs/netlab.md are replaced.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs"

#: Table name -> (document, scenario key in the results, rows: (label, field)).
TABLES = {
    "failover": (
        "chaos.md",
        ["primary_sigkill_ack_aof", "primary_sigkill_ack_replica"],
        [
            ("202 Accepted", "accepted"),
            ("accepted before the kill", "accepted_before_kill"),
            ("503 while there was no primary", "refused_during_failover"),
            ("complete", "complete"),
            ("**lost** (accepted, gone after the failover)", "lost"),
            ("executed twice (one stored outcome)", "executed_twice"),
            ("failover, seconds", "failover_seconds"),
        ],
    ),
    "cut": (
        "netlab.md",
        ["cut_node_host"],
        [
            ("tasks submitted", "tasks_submitted"),
            ("202 Accepted", "accepted"),
            ("no answer in time (in flight to node-2)", "refused_or_timed_out"),
            ("stored although the client saw no 202", "stored_without_a_202"),
            ("accepted while node-2 was cut off", "accepted_while_cut"),
            ("accepted by node-2 while cut off", "accepted_by_cut_node_while_cut"),
            ("tasks node-2 held at the cut", "held_by_cut_node"),
            ("redone elsewhere after the lease expired", "redone_elsewhere"),
            ("late writes refused after the heal", "late_writes_refused"),
            ("complete", "complete"),
            ("**lost**", "lost"),
            ("**outcomes written twice**", "outcomes_written_twice"),
            ("cut lasted, seconds", "cut_seconds"),
        ],
    ),
    "delay": (
        "netlab.md",
        [
            "valkey_delay_batch1.before",
            "valkey_delay_batch1.after",
            "valkey_delay_batch32.before",
            "valkey_delay_batch32.after",
        ],
        [
            ("POST /task, one client, p50 ms", "post_alone_p50_ms"),
            ("POST /task, 8 clients, p50 ms", "post_p50_ms"),
            ("POST /task, 8 clients, p95 ms", "post_p95_ms"),
            ("submissions per second", "submit_per_second"),
            ("tasks finished per second", "tasks_per_second"),
            ("tasks per second per worker", "tasks_per_second_per_worker"),
            ("complete of accepted", "complete"),
        ],
    ),
    "partition": (
        "netlab.md",
        ["partition_primary"],
        [
            ("202 Accepted (replica ack)", "accepted"),
            ("accepted before the cut", "accepted_before_cut"),
            ("no 202 (503 or timeout)", "refused_or_timed_out"),
            ("failover, seconds", "failover_seconds"),
            ("old primary's answer to a write", "old_primary_refused_with"),
            ("complete", "complete"),
            ("**lost**", "lost"),
            ("executed twice (one stored outcome)", "executed_twice"),
        ],
    ),
    "split": (
        "netlab.md",
        ["split_brain_ack_aof", "split_brain_ack_replica"],
        [
            ("202 Accepted", "accepted"),
            ("**lost** (a 202, gone after the heal)", "lost"),
            ("complete", "complete"),
            ("old primary refused writes after, seconds", "old_primary_refused_after_seconds"),
            ("old primary's answer to a write", "old_primary_refused_with"),
            ("no 202 (503 or timeout)", "refused_or_timed_out"),
        ],
    ),
}


def load(paths: list[Path]) -> list[dict]:
    """One merged dict per run: files of the same run share a suffix
    (``chaos-3.json`` + ``netlab-3.json``), so merge by name after the dash.
    The run's ``_started`` is the earliest of its files, ``_finished`` the
    latest (Unix seconds, from tests.support.results_reporter)."""
    runs: dict[str, dict] = {}
    for path in paths:
        run_name = path.stem.rpartition("-")[2]
        found = json.loads(path.read_text())
        run = runs.setdefault(run_name, {})
        for key, pick in (("_started", min), ("_finished", max)):
            if key in run and key in found:
                found[key] = pick(run[key], found[key])
        run.update(found)
    return list(runs.values())


def seconds(run: dict) -> float | None:
    """How long a run took from its first scenario to the end of its
    session, seconds (None for a file written before this was recorded)."""
    if "_started" not in run or "_finished" not in run:
        return None
    return round(run["_finished"] - run["_started"])


def runs_table(runs: list[dict]) -> str:
    """The runs the tables were rendered from: how many, and how long."""
    return "\n".join(
        [
            "| runs rendered | seconds each, first scenario to last |",
            "|---|---|",
            f"| {len(runs)} | {spread([seconds(run) for run in runs])} |",
        ]
    )


def value(run: dict, key: str):
    for part in key.split("."):
        run = run.get(part, {}) if isinstance(run, dict) else {}
    return run if run != {} else None


def spread(values: list) -> str:
    """``7`` if every run measured 7, ``5–9`` if they differ, ``–`` if none."""
    found = [v for v in values if v is not None]
    if not found:
        return "–"
    if all(isinstance(v, str) for v in found):
        return ", ".join(sorted(set(found)))
    low, high = min(found), max(found)
    return f"{low:g}" if low == high else f"{low:g}–{high:g}"


def heading(scenario: str) -> str:
    """``ack replica`` for ``primary_sigkill_ack_replica``, ``batch 32,
    after`` for ``valkey_delay_batch32.after``, ``measured`` for a lone
    scenario."""
    prefix, _, name = scenario.rpartition(".")
    if "ack_" in name:
        return "ack " + name.rpartition("ack_")[2]
    if "_batch" in prefix:
        return f"batch {prefix.rpartition('_batch')[2]}, {name}"
    return name if prefix else "measured"


def table(runs: list[dict], scenarios: list[str], rows: list[tuple[str, str]]) -> str:
    heads = [heading(s) for s in scenarios]
    lines = [f"| measured over {len(runs)} runs | " + " | ".join(heads) + " |"]
    lines.append("|---" * (len(scenarios) + 1) + "|")
    for label, field in rows:
        cells = [spread([value(run, f"{s}.{field}") for run in runs]) for s in scenarios]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render(paths: list[Path]) -> None:
    """Replace every results table in the docs with the runs in ``paths``."""
    runs = load(paths)
    replace("chaos.md", "runs", runs_table(runs))
    for name, (document, scenarios, rows) in TABLES.items():
        replace(document, name, table(runs, scenarios, rows))


def replace(document: str, name: str, rendered: str) -> None:
    """Put ``rendered`` between the ``results:NAME`` markers of ``document``.

    Raises:
        SystemExit: the document has no such block.
    """
    path = DOCS / document
    text = path.read_text()
    block = f"<!-- results:{name} -->\n{rendered}\n<!-- /results:{name} -->"
    pattern = re.compile(rf"<!-- results:{name} -->.*?<!-- /results:{name} -->", re.S)
    found = pattern.search(text)
    if found is None:
        raise SystemExit(f"{document} has no <!-- results:{name} --> block")
    start, end = found.span()
    path.write_text(text[:start] + block + text[end:])


if __name__ == "__main__":
    render([Path(arg) for arg in sys.argv[1:]])
