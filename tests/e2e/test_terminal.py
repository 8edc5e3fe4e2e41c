"""Closing the terminal that runs ``make run`` stops the cluster in order.

``make run`` runs here the way ``xterm -e make run`` or ``tmux new-window
'make run'`` run it: ``make`` is the session leader of a pseudo-terminal
(util-linux ``setsid --ctty``). Closing the terminal's master side hangs it
up, as closing the window does: Linux sends SIGHUP to make alone, which
waits for its child; the launcher must notice on its own, with every write
to the dead terminal failing, and stop nginx, then the nodes (finishing
their tasks), then Valkey. The next ``make run`` on the same folder finishes
what was accepted, each task exactly once.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
import requests

from tests.e2e.test_cluster import UP_ENV, descendants
from tests.support import note_running, still_running, wait_for
from wizard.cluster import ROOT, free_port, port_is_free

#: Tasks submitted before the terminal closes, and the CPU cost of each.
TASKS = 16
WORK_SECONDS = 0.4


class MakeRunInATerminal:
    """``make run`` as the session leader of a fresh pseudo-terminal, whose
    output is read (and kept) until the terminal is closed."""

    def __init__(self, port: int, var_dir: Path) -> None:
        self.port = port
        self.master, slave = os.openpty()
        env = {**UP_ENV, "WIZARD_WORK_SECONDS": str(WORK_SECONDS), "WIZARD_LEASE_SECONDS": "3"}
        self.make = subprocess.Popen(
            [
                shutil.which("setsid") or "setsid",
                "--ctty",
                "make",
                "--no-print-directory",
                "run",
                f"PORT={port}",
                "NODES=1",
                "WORKERS=2",
                f"VAR={var_dir}",
            ],  # fmt: skip
            cwd=ROOT,
            env=env,
            stdin=slave,
            stdout=slave,
            stderr=slave,
        )
        os.close(slave)
        self.output = bytearray()
        self.closing = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.started: dict[int, str] = {}

    def _read(self) -> None:
        # A read blocked on the master would keep the terminal open after
        # close(): poll, so the reader lets go before the close.
        while not self.closing.is_set():
            ready, _, _ = select.select([self.master], [], [], 0.1)
            if not ready:
                continue
            try:
                chunk = os.read(self.master, 4096)
            except OSError:
                # EIO: every writer has gone; nothing more to read.
                return
            self.output += chunk

    @property
    def text(self) -> str:
        return self.output.decode(errors="replace")

    def wait_up(self) -> None:
        wait_for(lambda: "stop: Ctrl+C" in self.text, timeout=90, interval=0.1, what=self.text)
        self.started.update(note_running(descendants(self.make.pid)))

    def close_terminal(self) -> None:
        """Close the master side: the terminal hangs up, as a closed window."""
        self.closing.set()
        self.reader.join()
        os.close(self.master)

    def kill_leftovers(self) -> None:
        """After a failed test: SIGKILL whatever still runs, by PID."""
        for pid in still_running(self.started):
            with contextlib.suppress(ProcessLookupError):
                # It ended between the check and the kill: nothing left to do.
                os.kill(pid, 9)
        if self.make.poll() is None:
            self.make.kill()
        self.make.wait()


def accepted_tasks(port: int) -> list[str]:
    session = requests.Session()
    ids = []
    for n in range(TASKS):
        response = session.post(
            f"http://127.0.0.1:{port}/task", params={"a": n, "b": 1}, timeout=10
        )
        assert response.status_code == 202, response.text
        ids.append(response.json()["task_id"])
    return ids


def node_log_lines(var_dir: Path) -> list[dict]:
    lines = []
    for path in sorted((var_dir / "logs").glob("node-*.log")):
        for text in path.read_text().splitlines():
            if text.startswith("{"):
                lines.append(json.loads(text))
    return lines


def completions(var_dir: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for line in node_log_lines(var_dir):
        if line["event"] == "task complete":
            counts[line["task_id"]] = counts.get(line["task_id"], 0) + 1
    return counts


@pytest.fixture
def terminals():
    opened: list[MakeRunInATerminal] = []
    yield opened
    for terminal in opened:
        terminal.kill_leftovers()


def test_closing_the_terminal_of_make_run_stops_everything_in_order_and_loses_nothing(
    tmp_path, terminals
):
    var_dir, port = tmp_path / "var", free_port()
    first = MakeRunInATerminal(port, var_dir)
    terminals.append(first)
    first.wait_up()
    task_ids = accepted_tasks(port)
    status = f"http://127.0.0.1:{port}/tasks/{task_ids[0]}/status"

    def first_taken():
        # Only a 200 counts: a 429 (the gateway's per-address limit) or a
        # 503 problem document has a numeric "status" that is not "pending".
        response = requests.get(status, timeout=10)
        return response.status_code == 200 and response.json()["status"] != "pending"

    wait_for(first_taken, timeout=30, what="tasks running when the terminal closes")

    first.close_terminal()

    first.make.wait(90)
    wait_for(lambda: not still_running(first.started), timeout=30, what="every process gone")
    assert port_is_free("127.0.0.1", port)
    lines = node_log_lines(var_dir)
    assert any(
        line["event"] == "node stopping on SIGTERM: asking children to finish" for line in lines
    )
    # Valkey gone before the nodes: their calls are refused or cut
    # ("connection"). A "timeout" is a slow answer on a busy machine (a
    # combined test run), not Valkey going away: it says nothing of the order.
    troubled = [line for line in lines if line.get("kind") not in (None, "timeout")]
    assert troubled == [], f"Valkey went away before the nodes had stopped: {troubled[:2]}"

    second = MakeRunInATerminal(port, var_dir)
    terminals.append(second)
    second.wait_up()
    session = requests.Session()

    done: dict[str, dict] = {}

    def all_complete():
        # Ask only for the unfinished tasks, and take only 200s: sixteen reads
        # every round would exhaust the gateway's per-address read limit
        # (20/s, burst 40) and its 429s would never all be "complete" at once.
        for task_id in [t for t in task_ids if t not in done]:
            response = session.get(f"http://127.0.0.1:{port}/tasks/{task_id}/status", timeout=10)
            if response.status_code == 200 and response.json()["status"] == "complete":
                done[task_id] = response.json()
        return len(done) == len(task_ids)

    wait_for(all_complete, timeout=120, interval=0.5, what="every accepted task completes")
    final = [done[t] for t in task_ids]
    assert [f["attempts"] for f in final] == [1] * TASKS, "a task ran twice"
    assert [f["result"] for f in final] == [n + 1 for n in range(TASKS)]
    counts = completions(var_dir)
    assert {t: counts.get(t) for t in task_ids} == {t: 1 for t in task_ids}

    second.close_terminal()
    second.make.wait(90)
    wait_for(lambda: not still_running(second.started), timeout=30, what="every process gone")
