"""Valkey's bad days, each produced for real on a Valkey of the test's own:
every loop waits them out and logs each spell once; any other error ends the
process, logged as JSON, so its supervisor restarts it."""

from __future__ import annotations

import dataclasses
import json
import logging
import subprocess
import sys
import threading

import pytest
import valkey

from tests.support import wait_for
from wizard import faults, store
from wizard.cluster import EmbeddedValkey, free_port
from wizard.loop import run_steps
from wizard.worker import Worker


@pytest.fixture
def own_valkey(tmp_path):
    """A Valkey of this test's own, so it can be made to misbehave."""
    server = EmbeddedValkey(free_port(), tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def own(own_valkey):
    client = valkey.Valkey.from_url(own_valkey.url, decode_responses=True)
    yield client
    client.close()


def raised(call) -> BaseException:
    try:
        call()
    except valkey.ValkeyError as error:
        return error
    raise AssertionError("Valkey did not refuse")


# --- the kinds, as Valkey really answers them -----------------------------


def test_out_of_memory_is_trouble_of_kind_oom_alone_in_a_pipeline_or_a_script(own):
    own.config_set("maxmemory", "1")
    try:
        assert faults.valkey_trouble(raised(lambda: own.set("k", "v"))) == "OOM"
        transaction = own.pipeline(transaction=True).set("k", "v").lpush("l", "x")
        assert faults.valkey_trouble(raised(transaction.execute)) == "OOM"
        script = "redis.call('SET', KEYS[1], 'v') return 1"
        assert faults.valkey_trouble(raised(lambda: own.eval(script, 1, "k"))) == "OOM"
    finally:
        own.config_set("maxmemory", "0")


def test_a_flushed_script_is_trouble_of_kind_noscript(own):
    assert faults.valkey_trouble(raised(lambda: own.evalsha("0" * 40, 0))) == "NOSCRIPT"


def test_a_long_script_makes_other_clients_see_busy(own, own_valkey):
    own.config_set("busy-reply-threshold", "50")
    spin = "local t = redis.call('TIME') local s = tonumber(t[1]) " + (
        "while tonumber(redis.call('TIME')[1]) < s + 1 do end return 1"
    )
    runner = threading.Thread(target=lambda: valkey.Valkey.from_url(own_valkey.url).eval(spin, 0))
    runner.start()
    try:
        error = wait_for(lambda: _busy_error(own), timeout=5, what="a BUSY reply")
        assert faults.valkey_trouble(error) == "BUSY"
    finally:
        runner.join()


def _busy_error(client) -> BaseException | None:
    try:
        client.get("k")
    except valkey.ResponseError as error:
        # BUSY while the script runs; anything else fails the assertion.
        return error
    return None


def test_a_replica_answers_readonly_and_masterdown(own):
    own.config_set("replica-serve-stale-data", "no")
    own.replicaof("127.0.0.1", str(free_port()))  # a master that never answers
    try:
        assert faults.valkey_trouble(raised(lambda: own.set("k", "v"))) == "READONLY"
        assert faults.valkey_trouble(raised(lambda: own.get("k"))) == "MASTERDOWN"
    finally:
        own.replicaof("NO", "ONE")


def test_too_few_replicas_is_trouble_of_kind_noreplicas(own):
    own.config_set("min-replicas-to-write", "1")
    try:
        assert faults.valkey_trouble(raised(lambda: own.set("k", "v"))) == "NOREPLICAS"
    finally:
        own.config_set("min-replicas-to-write", "0")


def test_connection_errors_and_a_changed_watched_key_are_trouble_too(own):
    closed = valkey.Valkey(port=free_port(), socket_connect_timeout=0.5)
    assert faults.valkey_trouble(raised(closed.ping)) == "connection"
    with own.pipeline(transaction=True) as tx:
        tx.watch("w")
        own.set("w", "changed")
        tx.multi()
        tx.set("w", "mine")
        assert faults.valkey_trouble(raised(tx.execute)) == "WATCH"


def test_a_malformed_command_or_a_wrong_type_is_a_bug_not_trouble(own):
    own.set("text", "v")
    assert faults.valkey_trouble(raised(lambda: own.lpush("text", "x"))) is None
    assert faults.valkey_trouble(raised(lambda: own.execute_command("NO-SUCH-COMMAND"))) is None
    assert faults.valkey_trouble(KeyError("x")) is None


# --- loops ride it out, logging once per spell -----------------------------


def test_a_loop_waits_out_a_spell_of_oom_and_logs_it_once_and_its_end_once(own, caplog):
    own.config_set("maxmemory", "1")
    writes = {"ok": 0, "failed": 0}

    def step():
        try:
            own.incr("counter")
        except valkey.exceptions.OutOfMemoryError:
            writes["failed"] += 1
            if writes["failed"] == 5:
                own.config_set("maxmemory", "0")
            raise
        writes["ok"] += 1

    with caplog.at_level(logging.INFO, logger="wizard.faults"):
        run_steps(
            step, stopped=lambda: writes["ok"] == 3, stop=print, pause=lambda s: None, what="test"
        )

    assert writes == {"ok": 3, "failed": 5}
    events = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert events[0][0] == "WARNING" and "Valkey trouble in test: OOM" in events[0][1]
    assert events[1][0] == "INFO" and "Valkey answering again in test" in events[1][1]
    assert len(events) == 2, events
    assert caplog.records[0].kind == "OOM"


def test_any_other_error_escapes_the_loop(own):
    def step():
        own.set("text", "v")
        own.lpush("text", "x")  # WRONGTYPE: a bug

    with pytest.raises(valkey.ResponseError, match="WRONGTYPE"):
        run_steps(step, stopped=lambda: False, stop=print, pause=lambda s: None, what="test")


def test_the_heartbeat_thread_survives_a_spell_of_oom_and_beats_again_after(settings, own_valkey):
    mine = dataclasses.replace(settings, valkey_url=own_valkey.url)
    worker = Worker(mine, "node-1/w1")
    own = valkey.Valkey.from_url(own_valkey.url, decode_responses=True)
    heartbeat = threading.Thread(target=worker._heartbeat_loop, name="heartbeat")
    heartbeat.start()
    try:
        wait_for(lambda: own.exists(store.heartbeat_key("node-1/w1")), what="a first beat")
        own.config_set("maxmemory", "1")
        wait_for(
            lambda: not own.exists(store.heartbeat_key("node-1/w1")),
            timeout=10,
            what="the heartbeat key expires while Valkey is full",
        )
        own.config_set("maxmemory", "0")
        wait_for(
            lambda: own.exists(store.heartbeat_key("node-1/w1")),
            timeout=5,
            what="the heartbeat is back",
        )
        assert heartbeat.is_alive()
    finally:
        own.config_set("maxmemory", "0")
        worker._stopping.set()
        heartbeat.join()
        worker.client.close()
        own.close()


# --- everything else ends the process, in JSON ----------------------------

CRASHING_THREAD = """
import threading, time
from wizard import faults, logs
logs.configure("info", node="node-1", process="test")
faults.install_crash_hooks()
def boom():
    raise faults.InjectedFault("injected")
threading.Thread(target=boom, name="heartbeat").start()
time.sleep(30)
"""


def test_an_error_escaping_a_thread_ends_the_process_with_one_json_line_and_no_stderr():
    finished = subprocess.run(
        [sys.executable, "-c", CRASHING_THREAD], capture_output=True, text=True, timeout=30
    )

    assert finished.returncode == faults.EXIT_CRASHED
    assert finished.stderr == ""
    (line,) = [json.loads(text) for text in finished.stdout.splitlines()]
    assert line["level"] == "critical"
    assert line["crashed_thread"] == "heartbeat"
    assert "InjectedFault: injected" in line["traceback"]


CRASHING_CHILD = """
import multiprocessing
from wizard import faults, logs
def main():
    logs.configure("info", node="node-1", process="child")
    raise KeyError("a bug in the main thread")
if __name__ == "__main__":
    child = multiprocessing.get_context("spawn").Process(target=faults.run_guarded, args=(main,))
    child.start()
    child.join()
    print(child.exitcode)
"""


def test_an_error_escaping_a_childs_main_thread_is_logged_as_json_not_a_traceback(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CRASHING_CHILD)
    finished = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60
    )

    assert finished.stderr == ""
    line, exit_code = finished.stdout.splitlines()
    assert int(exit_code) == faults.EXIT_CRASHED
    assert json.loads(line)["crashed_thread"] == "main"
    assert "KeyError: 'a bug in the main thread'" in json.loads(line)["traceback"]
