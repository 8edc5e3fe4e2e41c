"""Settings from the environment: defaults, parsing, and one clear line on
a bad value. No servers; the command-line check runs a real subprocess."""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from wizard.config import ConfigError, DurableAck, Settings

ROOT = Path(__file__).resolve().parents[2]

#: Every variable the node reads, so a test's subprocess starts from none.
VARIABLES = [variable for variable, _ in Settings._parsers().values()]


def test_without_variables_every_setting_has_its_documented_default():
    settings = Settings.from_env({})
    assert settings.valkey_url == "valkey://localhost:6379/0"
    assert settings.port == 8000
    assert settings.host == "0.0.0.0"
    assert settings.workers == 1
    assert settings.threads == 8
    assert settings.work_seconds == 2.0
    assert settings.result_ttl == 86400
    assert settings.grace_seconds == 10.0
    assert settings.log_level == "info"
    assert settings.lease_seconds == 10.0
    assert settings.max_attempts == 3
    assert settings.task_timeout == 30.0
    assert settings.retry_base_seconds == 0.5
    assert settings.fetch == "blmove"
    assert settings.durable_ack is DurableAck.OFF
    assert not settings.durable_ack
    assert settings.valkey_sentinels == ()
    assert settings.valkey_sentinel_master == "wizard"
    assert settings.admin_token == ""
    assert settings.chaos_operations is False
    assert settings.block_seconds == 1.0
    assert settings.rate_limit == 0.0
    assert settings.rate_burst == 20


def test_the_node_id_defaults_to_this_machines_hostname():
    assert Settings.from_env({}).node_id == socket.gethostname()


@pytest.mark.parametrize(
    "variable, raw, field, expected",
    [
        ("VALKEY_URL", "valkey://db:6380/2", "valkey_url", "valkey://db:6380/2"),
        ("VALKEY_URL", "redis://db:6379/0", "valkey_url", "redis://db:6379/0"),
        ("VALKEY_URL", "rediss://db:6379/0", "valkey_url", "rediss://db:6379/0"),
        ("WIZARD_NODE_ID", "node-7", "node_id", "node-7"),
        ("WIZARD_NODE_ID", " a1.b_c ", "node_id", "a1.b_c"),
        ("WIZARD_PORT", "9000", "port", 9000),
        ("WIZARD_HOST", "127.0.0.1", "host", "127.0.0.1"),
        ("WIZARD_WORKERS", "4", "workers", 4),
        ("WIZARD_WORKERS", "0", "workers", 0),
        ("WIZARD_THREADS", "16", "threads", 16),
        ("WIZARD_WORK_SECONDS", "0", "work_seconds", 0.0),
        ("WIZARD_WORK_SECONDS", "0.25", "work_seconds", 0.25),
        ("WIZARD_RESULT_TTL", "60", "result_ttl", 60),
        ("WIZARD_GRACE_SECONDS", "3.5", "grace_seconds", 3.5),
        ("WIZARD_LOG_LEVEL", "DEBUG", "log_level", "debug"),
        ("WIZARD_LOG_LEVEL", "warning", "log_level", "warning"),
        ("WIZARD_LEASE_SECONDS", "30", "lease_seconds", 30.0),
        ("WIZARD_MAX_ATTEMPTS", "5", "max_attempts", 5),
        ("WIZARD_TASK_TIMEOUT", "2.5", "task_timeout", 2.5),
        ("WIZARD_RETRY_BASE_SECONDS", "0.1", "retry_base_seconds", 0.1),
        ("WIZARD_FETCH", "brpop", "fetch", "brpop"),
        ("WIZARD_DURABLE_ACK", "1", "durable_ack", DurableAck.AOF),
        ("WIZARD_DURABLE_ACK", "yes", "durable_ack", DurableAck.AOF),
        ("WIZARD_DURABLE_ACK", "aof", "durable_ack", DurableAck.AOF),
        ("WIZARD_DURABLE_ACK", "Replica", "durable_ack", DurableAck.REPLICA),
        ("WIZARD_DURABLE_ACK", "off", "durable_ack", DurableAck.OFF),
        ("WIZARD_DURABLE_ACK", "0", "durable_ack", DurableAck.OFF),
        (
            "VALKEY_SENTINELS",
            "10.0.0.1:26379, s2:26380",
            "valkey_sentinels",
            ("10.0.0.1:26379", "s2:26380"),
        ),
        ("VALKEY_SENTINELS", "", "valkey_sentinels", ()),
        ("VALKEY_SENTINEL_MASTER", "wizard-prod", "valkey_sentinel_master", "wizard-prod"),
        ("WIZARD_ADMIN_TOKEN", "s3cret", "admin_token", "s3cret"),
        ("WIZARD_CHAOS_OPERATIONS", "true", "chaos_operations", True),
        ("WIZARD_BLOCK_SECONDS", "0.5", "block_seconds", 0.5),
        ("WIZARD_RATE_LIMIT", "12.5", "rate_limit", 12.5),
        ("WIZARD_RATE_BURST", "5", "rate_burst", 5),
        ("WIZARD_TRUSTED_PROXIES", " 10.1.0.0/16, ::1 ", "trusted_proxies", "10.1.0.0/16,::1"),
        ("WIZARD_TRUSTED_PROXIES", "", "trusted_proxies", ""),
        ("WIZARD_MAX_PENDING", "500", "max_pending", 500),
        ("WIZARD_SYNC_SLOTS", "7", "sync_slots", 7),
        ("WIZARD_SWITCH_INTERVAL", "0.0005", "switch_interval", 0.0005),
    ],
)
def test_each_variable_is_parsed_into_its_setting(variable, raw, field, expected):
    settings = Settings.from_env({variable: raw})
    assert getattr(settings, field) == expected
    assert type(getattr(settings, field)) is type(expected)


@pytest.mark.parametrize(
    "variable, raw",
    [
        ("VALKEY_URL", "localhost:6379"),
        ("VALKEY_URL", "http://db:6379"),
        ("WIZARD_NODE_ID", ""),
        ("WIZARD_NODE_ID", "node 1"),
        ("WIZARD_NODE_ID", "node/1"),
        ("WIZARD_NODE_ID", "n" * 65),
        ("WIZARD_PORT", "0"),
        ("WIZARD_PORT", "65536"),
        ("WIZARD_PORT", "http"),
        ("WIZARD_WORKERS", "abc"),
        ("WIZARD_WORKERS", "-1"),
        ("WIZARD_WORKERS", "65"),
        ("WIZARD_WORKERS", "1.5"),
        ("WIZARD_THREADS", "0"),
        ("WIZARD_WORK_SECONDS", "-1"),
        ("WIZARD_WORK_SECONDS", "nan"),
        ("WIZARD_WORK_SECONDS", "inf"),
        ("WIZARD_WORK_SECONDS", "two"),
        ("WIZARD_RESULT_TTL", "0"),
        ("WIZARD_GRACE_SECONDS", "forever"),
        ("WIZARD_LOG_LEVEL", "verbose"),
        ("WIZARD_LEASE_SECONDS", "0.1"),
        ("WIZARD_MAX_ATTEMPTS", "0"),
        ("WIZARD_TASK_TIMEOUT", "0"),
        ("WIZARD_RETRY_BASE_SECONDS", "-0.5"),
        ("WIZARD_FETCH", "lpop"),
        ("WIZARD_DURABLE_ACK", "maybe"),
        ("WIZARD_DURABLE_ACK", "2"),
        ("VALKEY_SENTINELS", "s1"),
        ("VALKEY_SENTINELS", "s1:26379,:26380"),
        ("VALKEY_SENTINELS", "s1:port"),
        ("VALKEY_SENTINELS", "s1:70000"),
        ("VALKEY_SENTINEL_MASTER", "my master"),
        ("WIZARD_CHAOS_OPERATIONS", "2"),
        ("WIZARD_BLOCK_SECONDS", "0"),
        ("WIZARD_RATE_LIMIT", "-1"),
        ("WIZARD_RATE_LIMIT", "fast"),
        ("WIZARD_RATE_BURST", "0"),
        ("WIZARD_TRUSTED_PROXIES", "nginx"),
        ("WIZARD_TRUSTED_PROXIES", "10.0.0.0/33"),
        ("WIZARD_MAX_PENDING", "0"),
        ("WIZARD_SYNC_SLOTS", "0"),
        ("WIZARD_SYNC_SLOTS", "8"),
        ("WIZARD_SWITCH_INTERVAL", "0"),
        ("WIZARD_SWITCH_INTERVAL", "1"),
    ],
)
def test_an_invalid_value_raises_config_error_naming_the_variable(variable, raw):
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({variable: raw})
    message = str(refused.value)
    assert message.startswith(variable + " ")
    assert "\n" not in message


def test_the_lease_must_be_more_than_twice_the_blocking_time():
    with pytest.raises(ConfigError, match="WIZARD_LEASE_SECONDS.*WIZARD_BLOCK_SECONDS"):
        Settings.from_env({"WIZARD_LEASE_SECONDS": "2", "WIZARD_BLOCK_SECONDS": "1"})
    settings = Settings.from_env({"WIZARD_LEASE_SECONDS": "2.1", "WIZARD_BLOCK_SECONDS": "1"})
    assert settings.lease_seconds == 2.1


def test_settings_built_directly_are_checked_only_when_asked():
    settings = Settings(lease_seconds=1, block_seconds=1)
    with pytest.raises(ConfigError, match="WIZARD_LEASE_SECONDS"):
        settings.check()


def test_settings_are_frozen():
    settings = Settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.workers = 2


def test_settings_survive_the_trip_through_a_child_process_environment():
    settings = Settings(
        node_id="node-3",
        workers=2,
        work_seconds=0.5,
        durable_ack=DurableAck.REPLICA,
        valkey_sentinels=("s1:26379", "s2:26379"),
        valkey_sentinel_master="prod",
        chaos_operations=True,
        admin_token="token",
        fetch="brpop",
    )
    env = settings.to_env()
    assert all(isinstance(value, str) for value in env.values())
    assert set(env) == set(VARIABLES)
    assert Settings.from_env(env) == settings


def node_with(variables: dict[str, str], *command: str) -> subprocess.CompletedProcess:
    env = {name: value for name, value in os.environ.items() if name not in VARIABLES}
    return subprocess.run(
        [sys.executable, "-m", "wizard", *(command or ("node",))],
        env={**env, **variables},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_a_node_with_a_bad_worker_count_exits_2_with_one_line_naming_the_variable():
    finished = node_with({"WIZARD_WORKERS": "many"})
    assert finished.returncode == 2
    lines = finished.stderr.splitlines()
    assert len(lines) == 1, finished.stderr
    assert "WIZARD_WORKERS" in lines[0]
    assert "'many'" in lines[0]
    assert finished.stdout == ""


def test_a_node_with_a_lease_too_short_for_its_blocking_time_exits_2_naming_both():
    finished = node_with({"WIZARD_LEASE_SECONDS": "1", "WIZARD_BLOCK_SECONDS": "1"})
    assert finished.returncode == 2
    lines = finished.stderr.splitlines()
    assert len(lines) == 1, finished.stderr
    assert "WIZARD_LEASE_SECONDS" in lines[0] and "WIZARD_BLOCK_SECONDS" in lines[0]


def test_wizard_up_names_a_bad_variable_on_the_terminal_before_starting_anything(tmp_path):
    finished = node_with(
        {"WIZARD_LEASE_SECONDS": "-1"}, "up", "--port", "1", "--var-dir", str(tmp_path)
    )
    assert finished.returncode == 2
    lines = finished.stderr.splitlines()
    assert len(lines) == 1 and "WIZARD_LEASE_SECONDS" in lines[0], finished.stderr
    assert list(tmp_path.iterdir()) == [], "nothing should have started"


def test_wizard_up_refuses_a_port_out_of_range_without_a_traceback(tmp_path):
    finished = node_with({}, "up", "--port", "99999", "--var-dir", str(tmp_path))
    assert finished.returncode == 2
    assert "a port is 1-65535" in finished.stderr
    assert "Traceback" not in finished.stderr
