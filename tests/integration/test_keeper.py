"""The keeper (wizard/keeper.py) passes on how valkey-server ended: a real
valkey-server under a real keeper, killed with SIGKILL, makes the keeper
exit 128 + 9, which the launcher reads back as "killed by SIGKILL"."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from tests.support import wait_for
from wizard.cluster import children_of, free_port, valkey_binary
from wizard.keeper import describe_exit, keeper_exit_code


def test_a_sigkilled_valkey_server_is_reported_as_killed_by_sigkill(tmp_path):
    server = [
        valkey_binary(),
        "--port",
        str(free_port()),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(tmp_path),
    ]
    argv = [
        sys.executable,
        "-m",
        "wizard.keeper",
        "--launcher",
        str(os.getpid()),
        "--wait",
        "1",
        "--",
        *server,
    ]
    keeper = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: children_of(keeper.pid), what="valkey-server under the keeper")
        (valkey_pid,) = children_of(keeper.pid)
        os.kill(valkey_pid, signal.SIGKILL)
        output, _ = keeper.communicate(timeout=30)
    finally:
        keeper.kill()
        keeper.wait()
    assert keeper.returncode == 128 + signal.SIGKILL
    assert describe_exit(keeper.returncode, keeper=True) == "killed by SIGKILL"
    assert f"valkey-server (pid {valkey_pid}) killed by SIGKILL" in output


def test_exit_codes_say_what_happened():
    assert keeper_exit_code(-signal.SIGTERM) == 143
    assert keeper_exit_code(1) == 1
    assert keeper_exit_code(0) == 1
    assert describe_exit(-signal.SIGKILL, keeper=False) == "killed by SIGKILL"
    assert describe_exit(137, keeper=False) == "exited with code 137"
    assert describe_exit(1, keeper=True) == "exited with code 1"
