"""The network-lab scripts (ops/scripts/lab/*.sh) run as a student runs
them, against the lab ``make netlab`` starts (``python -m wizard.netlab up``,
as root), each exiting 0 only if the system behaved as its lesson says; and
the lab's own promise: Ctrl+C stops every process it started and removes
every namespace and link it made, also while it is still starting. Plus
strict bash, shellcheck, and a line in the lab's README for each script.

Each lab here takes a /24 of its own (third octet 220-249: never the
terminal's 42, never the 20-219 of tests/netlab) and a var dir of its own.
The scenarios with counts under load are tests/netlab/'s; these tests run
the scripts' own small loads (45 tasks of 0.5 s, a 6 s cut). The three that
start a lab (marker ``lab_scripts``) take a few minutes together (more on a
loaded machine), so they run in ``make chaos`` with tests/netlab, not in
``make test``; the checks of the files run in both.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.ops.conftest import OPS
from tests.ops.test_scripts import SHELLCHECK
from tests.support import wait_for
from wizard.netlab import Network
from wizard.processes import children_of

LAB_DIR = OPS / "scripts" / "lab"
LAB_SCRIPTS = sorted(LAB_DIR.glob("*.sh"))


class NetLab:
    """A running ``python -m wizard.netlab up`` (what ``make netlab`` runs)
    on lab ``lab_id``, with its var dir, console file and every PID of its
    processes seen while it ran."""

    def __init__(self, var_dir: Path, *, ha: bool = False, **env: str) -> None:
        self.lab_id = 220 + os.getpid() % 30
        self.network = Network(self.lab_id)
        self.url = f"http://{self.network.address('gateway')}"
        self.var_dir = var_dir
        var_dir.mkdir(parents=True)
        self.console = var_dir / "console.txt"
        self.seen: dict[int, bytes] = {}
        argv = [sys.executable, "-m", "wizard.netlab", "--var-dir", str(var_dir), "up"]
        argv += ["--lab-id", str(self.lab_id), *(["--ha"] if ha else [])]
        with open(self.console, "w") as console:
            self.process = subprocess.Popen(
                argv, env={**os.environ, **env}, stdout=console, stderr=subprocess.STDOUT
            )

    def output(self) -> str:
        return self.console.read_text()

    def wait_ready(self) -> None:
        def up() -> bool:
            assert self.process.poll() is None, self.output()
            self.note_processes()
            return "stop: Ctrl+C" in self.output()

        wait_for(up, timeout=180, interval=0.2, what="the network lab to start")
        self.note_processes()

    def note_processes(self) -> None:
        """Remember every process under the launcher and its command line."""
        todo = children_of(self.process.pid)
        while todo:
            pid = todo.pop()
            try:
                self.seen[pid] = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                # It ended between the listing and the read.
                continue
            todo.extend(children_of(pid))

    def still_running(self) -> list[int]:
        """The processes seen that still run (same PID, same command line)."""
        running = []
        for pid, cmdline in self.seen.items():
            try:
                if Path(f"/proc/{pid}/cmdline").read_bytes() == cmdline:
                    running.append(pid)
            except OSError:
                # Gone: what we want.
                continue
        return running

    def leftovers(self) -> list[str]:
        """Namespaces, the client link and processes of this lab that exist."""
        links = subprocess.run(
            ["ip", "-o", "link", "show"], capture_output=True, text=True, check=True
        ).stdout
        client = f"{self.network.tag}c"
        return [
            *self.network.namespaces(),
            *([client] if f" {client}@" in links or f" {client}:" in links else []),
            *[f"pid {pid}" for pid in self.still_running()],
        ]

    def interrupt(self) -> int:
        """Ctrl+C (SIGINT) to the launcher; its exit code."""
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout=120)

    def force_down(self) -> None:
        """After a failed test: kill what is left, remove the namespaces."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for pid in self.still_running():
            os.kill(pid, signal.SIGKILL)
        self.network.destroy()


@pytest.fixture
def start_netlab(tmp_path):
    """Start a NetLab; whatever the test did, nothing of it is left after."""
    started: list[NetLab] = []

    def start(**options) -> NetLab:
        lab = NetLab(tmp_path / f"var{len(started)}", **options)
        started.append(lab)
        return lab

    try:
        yield start
    finally:
        for lab in started:
            lab.force_down()


def run(script: str, lab: NetLab, timeout: float = 240, **env: str) -> str:
    """Run one lab script as a program against ``lab``; return its output.
    Fails the test on a non-zero exit."""
    base = {"BASE_URL": lab.url, "VAR_DIR": str(lab.var_dir), "PYTHON": sys.executable}
    result = subprocess.run(
        [str(LAB_DIR / script)],
        env={**os.environ, **base, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, (
        f"{script} exited {result.returncode}:\n{result.stdout}{result.stderr}"
    )
    return result.stdout


def assert_ctrl_c_leaves_nothing(lab: NetLab) -> None:
    assert lab.interrupt() == 0, lab.output()
    assert "SIGINT: stopping the lab" in lab.output()
    assert "nothing left running, no namespace left" in lab.output()
    assert lab.leftovers() == []


# --- the scripts as files ------------------------------------------------------


def test_there_are_three_lab_scripts_each_described_in_the_readme():
    readme = (LAB_DIR / "README.md").read_text()
    assert [p.name[:3] for p in LAB_SCRIPTS] == ["01-", "02-", "03-"]
    for path in LAB_SCRIPTS:
        assert f"`{path.name}`" in readme, path.name


@pytest.mark.parametrize("path", LAB_SCRIPTS, ids=lambda p: p.name)
def test_each_lab_script_is_strict_bash_aimed_at_the_lab_by_default(path):
    text = path.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "\nset -euo pipefail\n" in text
    assert 'BASE_URL="${BASE_URL:-http://198.18.42.2}"' in text
    assert 'source "$(dirname "$0")/../common.bash"' in text, "fail, json, wait_done"
    assert os.access(path, os.X_OK)


def test_shellcheck_finds_nothing_in_the_lab_scripts():
    result = subprocess.run(
        [SHELLCHECK, "-x", *map(str, LAB_SCRIPTS)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=LAB_DIR,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- the scripts against the lab ---------------------------------------------


@pytest.mark.lab_scripts
@pytest.mark.timeout(600)
def test_a_cut_host_is_routed_around_losing_nothing_and_a_slow_link_slows_every_post(
    start_netlab,
):
    lab = start_netlab()
    lab.wait_ready()

    cut = run("01-cut-a-node-host.sh", lab, N="45", CUT_SECONDS="6")
    assert "none accepted by node-2 after the cut" in cut
    assert ", lost 0\n" in cut
    assert "late results of node-2 refused (fenced): " in cut
    assert "Nothing lost, no outcome written twice." in cut

    slow = run("02-slow-valkey.sh", lab, M="10")
    assert "POST /task, 20 ms per round trip:" in slow
    # The script removed its delay on the way out: a round trip is quick again.
    assert (lab.var_dir / "lab" / "valkey-delay-ms").read_text() == "0\n"

    lab.note_processes()
    assert_ctrl_c_leaves_nothing(lab)


@pytest.mark.lab_scripts
@pytest.mark.timeout(600)
def test_the_primary_cut_off_fails_over_refuses_writes_and_every_202_completes(start_netlab):
    lab = start_netlab(ha=True, WIZARD_DURABLE_ACK="replica")
    lab.wait_ready()
    before = requests.get(f"{lab.url}/cluster", timeout=10).json()["valkey"]
    assert before["via"] == "sentinel"

    out = run("03-partition-the-primary.sh", lab)

    assert f"primary: {before['primary']} on valkey-1" in out
    assert "refused: NOREPLICAS" in out
    assert f"/cluster lists {before['primary']} among the replicas" in out
    assert "Nothing acknowledged was lost." in out
    after = requests.get(f"{lab.url}/cluster", timeout=10).json()["valkey"]
    assert after["primary"] != before["primary"]
    lab.note_processes()
    assert_ctrl_c_leaves_nothing(lab)


@pytest.mark.lab_scripts
@pytest.mark.timeout(300)
def test_ctrl_c_while_the_lab_starts_removes_everything_it_made(start_netlab):
    lab = start_netlab(ha=True)
    wait_for(
        lambda: len(lab.network.namespaces()) >= 3,
        timeout=60,
        interval=0.05,
        what="the lab half built",
    )
    lab.note_processes()
    assert_ctrl_c_leaves_nothing(lab)
