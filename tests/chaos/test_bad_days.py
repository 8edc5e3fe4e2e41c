"""Chaos: Valkey's bad days and bugs inside a node, under load, on the real
local cluster. No loop may die in silence: every process either rides the
trouble out (and logs it once) or exits and is restarted by its supervisor.

- Valkey out of memory for 5 s; Valkey loading a large append-only file;
  writes paused (CLIENT PAUSE WRITE) for 5 s; its scripts flushed; every
  client connection killed at once;
- an unexpected error injected in each kind of thread of a node.

Every scenario is bounded in time and records what it measured in RESULTS.
"""

from __future__ import annotations

import signal
import time

import pytest
import valkey

from tests.chaos.conftest import CHAOS_TEST_SECONDS, RESULTS
from tests.support import wait_for
from wizard import store

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(CHAOS_TEST_SECONDS)]

#: How long each spell of trouble lasts, seconds.
SPELL_SECONDS = 5.0
#: Tasks written into Valkey before the LOADING scenario restarts it.
FILLER_TASKS = 200_000


def hold_for(seconds: float, since: float) -> None:
    """Let a spell last ``seconds`` from ``since`` (a metronome for the fault,
    not a guess at readiness)."""
    time.sleep(max(0.0, since + seconds - time.monotonic()))


def ended_well(chaos, tasks: dict[str, dict]) -> dict:
    """Check the ledger after a spell; returns the counts to report.
    Every accepted task complete with its result, recorded once."""
    complete = [i for i, t in tasks.items() if t["status"] == "complete"]
    assert len(complete) == len(tasks), [t for t in tasks.values() if t["status"] != "complete"][:3]
    assert all(int(tasks[i]["result"]) == chaos.accepted[i] for i in complete)
    logged = chaos.completions_logged()
    twice = sum(1 for n in logged.values() if n > 1)
    assert twice == 0, "a task was completed twice"
    dead = chaos.valkey.llen(store.DEAD_LETTER_QUEUE)
    assert dead == 0
    assert chaos.non_json_log_lines() == []
    return {
        "answers": chaos.answers_by_status(),
        "accepted": len(chaos.accepted),
        "complete": len(complete),
        "lost": len(tasks) - len(complete),
        "completed_twice": twice,
        "dead_lettered": dead,
        "run_more_than_once": sum(int(t["attempts"]) > 1 for t in tasks.values()),
    }


def test_valkey_out_of_memory_for_five_seconds_refuses_then_recovers_within_five(start_cluster):
    chaos = start_cluster(nodes=2, workers=2, WIZARD_WORK_SECONDS=0.01)
    supervisors = chaos.supervisor_pids()
    with chaos.load():
        wait_for(lambda: len(chaos.accepted) >= 200, what="load before the spell")
        chaos.valkey.config_set("maxmemory", "1mb")
        full_since = time.monotonic()
        wait_for(lambda: chaos.unavailable["out of memory"], what="a 503 for a full Valkey")
        hold_for(SPELL_SECONDS, full_since)
        during = chaos.answered_between(full_since, time.monotonic())
        chaos.valkey.config_set("maxmemory", "0")
        spell_end = time.monotonic()
        wait_for(chaos.all_ready, timeout=5, interval=0.1, what="ready within 5 s of the end")
        ready_after = time.monotonic() - spell_end
        chaos.wait_accepted(200)

    tasks = chaos.wait_all_finished()

    assert "202" not in during, f"a task was accepted while Valkey was full: {during}"
    assert chaos.retry_after == chaos.answers[503], "a 503 without Retry-After"
    report = ended_well(chaos, tasks)
    assert report["run_more_than_once"] == 0, "a task ran twice because of the spell"
    assert chaos.supervisor_pids() == supervisors and chaos.restarts() == {}
    RESULTS["valkey_out_of_memory"] = {
        **report,
        "answers_during_spell": during,
        "ready_again_after_seconds": round(ready_after, 2),
        "trouble_logged": dict(chaos.troubles_logged()),
        "restarts": chaos.restarts(),
    }


def fill(url: str, count: int) -> None:
    """Write ``count`` finished tasks into database 1 of Valkey, server-side
    (a script writes 20,000 per call), so its append-only file grows large
    while the cluster's database 0 stays as it is."""
    filler = valkey.Valkey.from_url(url.rsplit("/", 1)[0] + "/1", socket_timeout=60)
    script = """
    for i = tonumber(ARGV[1]), tonumber(ARGV[2]) do
      redis.call('HSET', 'task:filler' .. i, 'operation', 'add', 'a', '1', 'b', '2',
        'status', 'complete', 'result', '3', 'accepted_by', 'node-0', 'attempts', '1')
    end
    return 1
    """
    for start in range(1, count + 1, 20_000):
        filler.eval(script, 0, start, min(count, start + 19_999))
    assert filler.dbsize() == count
    filler.close()


def test_valkey_loading_a_large_aof_answers_503_then_resumes_without_a_restart(start_cluster):
    chaos = start_cluster(nodes=2, workers=1, WIZARD_WORK_SECONDS=0.005)
    fill(chaos.cluster.admin_url, FILLER_TASKS)
    supervisors, workers = chaos.supervisor_pids(), chaos.workers()
    with chaos.load():
        wait_for(lambda: len(chaos.accepted) >= 100, what="load before the restart")
        chaos.cluster.kill_valkey(signal.SIGTERM)
        chaos.cluster.start_valkey()  # returns once it has loaded
        chaos.wait_accepted(200)
    wait_for(chaos.all_ready, timeout=15, interval=0.1, what="every node ready again")

    tasks = chaos.wait_all_finished()

    assert chaos.unavailable["loading"] >= 1, f"no 503 while loading: {chaos.unavailable}"
    report = ended_well(chaos, tasks)
    assert chaos.supervisor_pids() == supervisors and chaos.workers() == workers
    assert chaos.restarts() == {}
    RESULTS["valkey_loading"] = {
        **report,
        "filler_tasks_in_the_aof": FILLER_TASKS,
        "unavailable_by_cause": dict(chaos.unavailable),
        "trouble_logged": dict(chaos.troubles_logged()),
        "restarts": chaos.restarts(),
    }


def test_writes_paused_for_five_seconds_stall_then_every_accepted_task_completes(start_cluster):
    chaos = start_cluster(nodes=2, workers=2, WIZARD_WORK_SECONDS=0.01)
    with chaos.load():
        wait_for(lambda: len(chaos.accepted) >= 200, what="load before the pause")
        sent = time.monotonic()
        chaos.valkey.execute_command("CLIENT", "PAUSE", int(SPELL_SECONDS * 1000), "WRITE")
        paused_since = time.monotonic()
        hold_for(SPELL_SECONDS, sent)
        # Requests sent once the pause was on and answered before it can
        # have ended (it started after `sent` and lasts SPELL_SECONDS).
        during = chaos.answered_between(paused_since, sent + SPELL_SECONDS)
        chaos.wait_accepted(200)
    wait_for(chaos.all_ready, timeout=15, interval=0.1, what="every node ready again")

    tasks = chaos.wait_all_finished()

    assert "202" not in during, f"a task was accepted while writes were paused: {during}"
    report = ended_well(chaos, tasks)
    # Workers add their counts to Valkey once a second: wait for the last.
    wait_for(
        lambda: chaos.stat("complete:add") >= report["complete"],
        what="the workers' counts flushed",
    )
    assert chaos.restarts() == {}
    RESULTS["client_pause_write"] = {
        **report,
        "answers_during_pause": during,
        "unavailable_by_cause": dict(chaos.unavailable),
        "fenced_writes": chaos.stat("fenced_writes"),
        "restarts": chaos.restarts(),
    }


def test_scripts_flushed_mid_run_are_loaded_again_and_nothing_is_lost(start_cluster):
    chaos = start_cluster(nodes=2, workers=2, WIZARD_WORK_SECONDS=0.01)
    flushes = 0
    with chaos.load():
        for _ in range(3):
            chaos.wait_accepted(150)
            chaos.valkey.script_flush()
            flushes += 1

    tasks = chaos.wait_all_finished()

    report = ended_well(chaos, tasks)
    assert report["run_more_than_once"] == 0
    assert chaos.refused == 0, chaos.answers_by_status()
    assert chaos.restarts() == {}
    RESULTS["script_flush"] = {
        **report,
        "flushes": flushes,
        "trouble_logged": dict(chaos.troubles_logged()),
        "restarts": chaos.restarts(),
    }


def test_every_node_connection_killed_at_once_is_reopened_and_nothing_is_lost(start_cluster):
    chaos = start_cluster(nodes=2, workers=2, WIZARD_WORK_SECONDS=0.01)
    killed = 0
    with chaos.load():
        for _ in range(3):
            chaos.wait_accepted(150)
            killed += chaos.valkey.client_kill_filter(_type="normal", skipme=True)
    wait_for(chaos.all_ready, timeout=15, interval=0.1, what="every node ready again")

    tasks = chaos.wait_all_finished()

    assert killed >= 3 * 2 * 4, "each kill should have cut every process of both nodes"
    report = ended_well(chaos, tasks)
    assert chaos.restarts() == {}
    RESULTS["client_kill_all"] = {
        **report,
        "connections_killed": killed,
        "unavailable_by_cause": dict(chaos.unavailable),
        "trouble_logged": dict(chaos.troubles_logged()),
        "restarts": chaos.restarts(),
    }


#: Thread of node-1 -> the process its fault takes down (and restarts).
THREADS = {
    "heartbeat": "node-1/w1",
    "worker": "node-1/w1",
    "scheduler": "node-1/scheduler",
    "api": "node-1/api",
}


#: Tasks that may wait in the queue in the thread-fault scenario.
THREAD_FAULT_BACKLOG = 100


def test_an_unexpected_error_in_each_kind_of_thread_restarts_its_process_and_loses_nothing(
    start_cluster,
):
    chaos = start_cluster(nodes=2, workers=1, WIZARD_WORK_SECONDS=0.01, WIZARD_CHAOS_OPERATIONS=1)
    expected: dict[str, int] = {}
    # Four process restarts take long on a loaded machine; without a bound
    # on the backlog, 4 clients piled up 1,800 tasks (18 CPU-seconds) for
    # 2 workers, more than the test's time allows.
    with chaos.load(backlog=THREAD_FAULT_BACKLOG):
        for thread, process in THREADS.items():
            chaos.wait_accepted(100)
            expected[process] = expected.get(process, 0) + 1
            chaos.valkey.set(store.chaos_fault_key("node-1", thread), "1")
            wait_for(
                lambda p=process: chaos.restarts().get(p, 0) == expected[p],
                timeout=30,
                what=f"the {thread} fault restarts {process}",
            )
        wait_for(chaos.all_ready, timeout=30, interval=0.1, what="every node ready again")
        chaos.wait_accepted(100)

    tasks = chaos.wait_all_finished()

    deaths = chaos.deaths()
    assert [d["exit_code"] for d in deaths] == [3] * len(THREADS), deaths
    assert chaos.restarts() == expected
    assert not list(chaos.valkey.scan_iter(match=store.CHAOS_FAULT_PREFIX + "*"))
    report = ended_well(chaos, tasks)
    RESULTS["thread_faults"] = {
        **report,
        "faults_injected": len(THREADS),
        "exit_codes": sorted({d["exit_code"] for d in deaths}),
        "restarts": chaos.restarts(),
    }
