"""Process titles and lab settings, without a cluster: a real child process
renames itself, and ``ps``'s two sources (/proc/<pid>/cmdline and
/proc/<pid>/comm) read the new names."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from tests.support import wait_for
from wizard import lab, proctitle

RENAME = (
    "from wizard import proctitle; import sys, time; "
    "proctitle.name(node_id='node-9', role='worker w3'); print('named', flush=True); "
    "sys.stdin.read()"
)


def test_a_process_renames_itself_for_ps_in_cmdline_and_comm():
    child = subprocess.Popen(
        [sys.executable, "-c", RENAME], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline() == "named\n"
        assert proctitle.read_title(child.pid) == "wizard node-9 worker w3"
        assert Path(f"/proc/{child.pid}/comm").read_text() == "w3 node-9\n"
        ps = subprocess.run(
            ["ps", "-o", "args=", "-p", str(child.pid)], capture_output=True, text=True, timeout=10
        )
        assert ps.stdout.strip() == "wizard node-9 worker w3"
    finally:
        child.send_signal(signal.SIGTERM)
        child.wait(timeout=10)


def test_a_short_name_keeps_the_role_when_the_node_id_is_long():
    assert proctitle.short_name("node-1", "api") == "api node-1"
    assert proctitle.short_name("3f2a9b1c0d4e", "worker w12") == "w12 3f2a9b1c0d4"
    assert proctitle.short_name("a-very-long-container-name", "scheduler") == "scheduler a-ver"
    assert len(proctitle.short_name("x" * 64, "supervisor")) == proctitle.COMM_MAX


def test_a_process_that_is_gone_has_no_title():
    done = subprocess.run([sys.executable, "-c", "pass"], timeout=30, check=True)
    assert done.returncode == 0
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=30)
    wait_for(lambda: proctitle.read_title(child.pid) == "", timeout=5, what="the pid to vanish")


def test_lab_mode_gives_the_nodes_its_settings_unless_you_set_them(tmp_path):
    env = lab.node_env(tmp_path, environ={"WIZARD_MAX_ATTEMPTS": "5"})
    assert "WIZARD_MAX_ATTEMPTS" not in env, "yours is inherited as it is"
    assert env["WIZARD_CHAOS_OPERATIONS"] == "1"
    assert env["WIZARD_RATE_LIMIT"] == "5"
    token_file = tmp_path / "secrets" / "admin-token"
    assert env["WIZARD_ADMIN_TOKEN"] == token_file.read_text().strip()
    assert token_file.stat().st_mode & 0o077 == 0
    assert lab.node_env(tmp_path, environ={})["WIZARD_ADMIN_TOKEN"] == env["WIZARD_ADMIN_TOKEN"]
    shown = "\n".join(lab.banner_lines(tmp_path, environ={"WIZARD_RATE_BURST": "30"}))
    assert "LAB MODE" in shown and "bursts of 30" in shown and env["WIZARD_ADMIN_TOKEN"] in shown


def test_a_node_restart_is_announced_once_not_again_for_its_supervisor():
    from wizard.cluster import changed_titles

    before = {"wizard node-3 supervisor": 10, "wizard node-3 api": 11, "wizard node-1 w1": 5}
    now = {"wizard node-3 supervisor": 20, "wizard node-3 api": 21, "wizard node-1 w1": 5}
    assert changed_titles(before, now) == ["wizard node-3 api restarted: pid 21 (was 11)"]
