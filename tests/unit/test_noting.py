"""The tests' process bookkeeping (tests/support.py): a process noted to be
checked later must be one that runs, or it would look alive forever.

A Valkey primary's fork child that has just streamed a copy to a replica is
a zombie for a moment; the HA end-to-end test once noted one and then saw it
"still running" 30 s after the launcher's stop, though it had long gone.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support import note_running, still_running, wait_for


def state(pid: int) -> str:
    """The state letter of ``pid`` in /proc (R, S, Z...)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_a_zombie_is_not_noted_so_it_never_looks_still_running():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        # Not reaped yet (no wait): it stays a zombie until we wait for it.
        wait_for(lambda: state(child.pid) == "Z", what="the child to exit")
        assert note_running([child.pid]) == {}
    finally:
        child.wait()
    assert still_running(note_running([child.pid])) == []


def test_a_running_process_is_noted_and_seen_gone_once_it_ends():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        noted = note_running([child.pid])
        assert still_running(noted) == [child.pid]
    finally:
        child.kill()
        child.wait()
    assert still_running(noted) == []
