"""The whole system on this machine, through the real nginx gateway.

A :class:`~wizard.cluster.LocalCluster` (a real valkey-server, three real
nodes with one worker each, a real nginx doing round robin) runs on free
ports for the module. ``python -m wizard up`` itself is run as a
subprocess, the way ``make run`` runs it, and stopped with SIGTERM.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from tests.support import command_line, note_running, still_running, wait_for
from wizard.cluster import ROOT, LocalCluster, children_of, free_port, port_is_free

NODES = {"node-1", "node-2", "node-3"}


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``: children, their children, and so on."""
    found = []
    for child in children_of(pid):
        found += [child, *descendants(child)]
    return found


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Valkey, three nodes (one worker each, 50 ms per task) and nginx."""
    local = LocalCluster(
        gateway_port=free_port(),
        nodes=len(NODES),
        workers=1,
        var_dir=tmp_path_factory.mktemp("cluster"),
        node_env={"WIZARD_WORK_SECONDS": "0.05"},
        # These tests poll 30 statuses at a time through the gateway: on a
        # slow machine that outlasts the per-client burst and every poll
        # gets a 429. The gateway's limits have their own tests (tests/edge).
        gateway_limits=False,
    )
    with local:
        yield local


# --- through the gateway --------------------------------------------------


def test_thirty_tasks_through_nginx_are_spread_over_every_node_and_several_workers(cluster):
    session = requests.Session()
    accepted = {}
    for n in range(30):
        response = session.post(f"{cluster.url}/task", params={"a": n, "b": 1}, timeout=10)
        assert response.status_code == 202, response.text
        body = response.json()
        accepted[body["task_id"]] = (n + 1, body["accepted_by"])
    assert {node for _, node in accepted.values()} == NODES

    final: dict[str, dict] = {}

    def statuses():
        # Only the unfinished tasks, and only 200s: thirty reads a round
        # would exhaust the gateway's per-address read limit (20/s, burst
        # 40), and a 429's problem document is never "complete".
        for task_id in [t for t in accepted if t not in final]:
            response = session.get(f"{cluster.url}/tasks/{task_id}/status", timeout=10)
            if response.status_code == 200 and response.json()["status"] == "complete":
                final[task_id] = response.json()
        return len(final) == len(accepted)

    wait_for(statuses, timeout=60, interval=0.5, what="30 tasks complete")
    for task_id, status in final.items():
        total, accepted_by = accepted[task_id]
        assert status["result"] == total
        assert status["accepted_by"] == accepted_by
        assert status["attempts"] == 1
    handlers = Counter(status["handled_by"] for status in final.values())
    assert len(handlers) > 1, handlers
    checkers = Counter(status["checked_by"] for status in final.values())
    assert len(checkers) > 1, checkers
    session.close()


#: The original project's load test: clients that each submit tasks and poll
#: them until done, and clients that keep loading the dashboard.
SUBMITTERS, TASKS_EACH, PAGE_LOADERS = 12, 5, 10


def poll_until_ended(session: requests.Session, url: str) -> dict:
    """GET the status at ``url`` until the task is complete or failed (at
    most 60 s); returns the last status document.

    Raises:
        AssertionError: an answer other than 200.
    """
    last: list[dict] = []

    def ended() -> bool:
        polled = session.get(url, timeout=30)
        assert polled.status_code == 200, polled.text
        last.append(polled.json())
        return last[-1]["status"] in ("complete", "failed")

    wait_for(ended, timeout=60, interval=0.1, what=f"task {url}")
    return last[-1]


def submit_and_poll(url: str, client: int) -> list[tuple[int, dict]]:
    """One client of the load test: TASKS_EACH tasks, each posted and then
    polled until it ends; returns (expected sum, last status) for each.

    Raises:
        AssertionError: an answer other than 202 or 200.
    """
    finished = []
    with requests.Session() as session:
        for n in range(TASKS_EACH):
            posted = session.post(f"{url}/task", params={"a": client, "b": n}, timeout=30)
            assert posted.status_code == 202, posted.text
            status = poll_until_ended(session, url + posted.headers["Location"])
            finished.append((client + n, status))
    return finished


def load_the_page(url: str, done) -> Counter:
    """One client loading / and the files it names, again and again until
    ``done()`` (at most 200 rounds); returns the count of each status code."""
    codes: Counter = Counter()
    with requests.Session() as session:
        for _ in range(200):
            page = session.get(f"{url}/", timeout=30)
            codes[page.status_code] += 1
            for asset in re.findall(r'(?:href|src)="(static/[^"]+)"', page.text):
                codes[session.get(f"{url}/{asset}", timeout=30).status_code] += 1
            if done():
                break
    return codes


def test_twelve_clients_submitting_and_polling_and_ten_loading_the_page_run_clean(cluster):
    with ThreadPoolExecutor(SUBMITTERS + PAGE_LOADERS) as pool:
        submitters = [
            pool.submit(submit_and_poll, cluster.url, client) for client in range(SUBMITTERS)
        ]
        loaders = [
            pool.submit(load_the_page, cluster.url, lambda: all(f.done() for f in submitters))
            for _ in range(PAGE_LOADERS)
        ]
        finished = [pair for future in submitters for pair in future.result()]
        codes = sum((future.result() for future in loaders), Counter())

    assert len(finished) == SUBMITTERS * TASKS_EACH
    for total, status in finished:
        assert (status["status"], status["result"], status["attempts"]) == ("complete", total, 1)
    assert set(codes) == {200}, codes
    assert codes[200] >= PAGE_LOADERS * 2, "every loader fetched the page and its files"


def test_the_whoami_round_robin_visits_every_node_in_turn(cluster):
    session = requests.Session()
    seen = [session.get(f"{cluster.url}/whoami", timeout=10).json()["node"] for _ in range(6)]
    session.close()
    assert Counter(seen) == {node: 2 for node in NODES}, seen


def test_each_node_answers_on_its_own_port_too(cluster):
    for name in NODES:
        response = requests.get(cluster.node_url(name) + "/whoami", timeout=10)
        assert response.json()["node"] == name


def test_a_task_accepted_by_one_node_is_read_from_every_node(cluster):
    posted = requests.post(f"{cluster.url}/task", params={"a": 40, "b": 2}, timeout=10)
    path = posted.headers["Location"]

    def complete():
        body = requests.get(cluster.node_url("node-1") + path, timeout=10).json()
        return body["status"] == "complete"

    wait_for(complete, timeout=10, what="the task completes")
    for name in NODES:
        body = requests.get(cluster.node_url(name) + path, timeout=10).json()
        assert (body["result"], body["checked_by"]) == (42, name)


# --- python -m wizard up --------------------------------------------------


#: The environment of every launcher these tests start: its own Valkey.
UP_ENV = {name: value for name, value in os.environ.items() if name != "VALKEY_URL"}


def up_command(port: int, var_dir: Path) -> list[str]:
    """``python -m wizard up`` with two nodes (to spare the two cores)."""
    return [
        sys.executable, "-m", "wizard", "up",
        "--port", str(port), "--nodes", "2", "--var-dir", str(var_dir),
    ]  # fmt: skip


def run_up_once(port: int, var_dir: Path) -> subprocess.CompletedProcess:
    """Run ``python -m wizard up`` expecting it to refuse and exit at once."""
    return subprocess.run(
        up_command(port, var_dir),
        cwd=ROOT,
        env=UP_ENV,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@dataclass
class Launched:
    """A running ``python -m wizard up``: its port, folder, output file and
    process, and the processes of its cluster noted so far (pid -> start)."""

    port: int
    var_dir: Path
    output: Path
    launcher: subprocess.Popen
    started: dict[int, str] = field(default_factory=dict)

    @property
    def text(self) -> str:
        """What the launcher has printed so far."""
        return self.output.read_text()

    def note_processes(self) -> dict[int, str]:
        """Remember every process below the launcher, to check them later."""
        self.started.update(note_running(descendants(self.launcher.pid)))
        return self.started

    def all_gone(self) -> bool:
        """True once none of the noted processes runs any more."""
        return not still_running(self.started)

    def left_running(self) -> list[str]:
        """Each noted process still running, as ``pid: command line``."""
        return [f"{pid}: {command_line(pid)}" for pid in still_running(self.started)]


def launch(var_dir: Path, output: Path, env: dict[str, str] | None = None) -> Launched:
    """Start ``python -m wizard up`` on a free port with its files in
    ``var_dir``, printing to ``output``; return it once it printed its URLs.
    The caller stops it (:func:`stop_for_good`)."""
    port = free_port()
    with open(output, "wb") as sink:
        launcher = subprocess.Popen(
            up_command(port, var_dir),
            cwd=ROOT,
            env=env or UP_ENV,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    up = Launched(port, var_dir, output, launcher)
    try:
        # Until the banner, or the launcher ends (it could not start: the
        # text says why); a loaded machine may take a minute and more.
        wait_for(
            lambda: "stop: Ctrl+C" in up.text or launcher.poll() is not None,
            timeout=90,
            interval=0.1,
            what="the banner",
        )
        assert "stop: Ctrl+C" in up.text, "the launcher ended before its banner"
    except AssertionError as error:
        stop_for_good(launcher, up.started)
        raise AssertionError(f"{error}; the launcher printed:\n{up.text}") from None
    return up


@pytest.fixture
def launched(tmp_path):
    """``python -m wizard up`` as a real subprocess, up and printing its
    URLs; stopped for good (by PID) after the test, whatever happened."""
    up = launch(tmp_path / "var", tmp_path / "up.out")
    try:
        yield up
    finally:
        stop_for_good(up.launcher, up.started)


def stop_for_good(launcher: subprocess.Popen, started: dict[int, str]) -> None:
    """Clean up after a failed test: SIGTERM the launcher, then SIGKILL any
    process of its cluster still running, by PID."""
    if launcher.poll() is None:
        launcher.send_signal(signal.SIGTERM)
        try:
            launcher.wait(60)
        except subprocess.TimeoutExpired:
            # It hangs: the kills below end what it started, then itself.
            launcher.kill()
    for pid in still_running(started):
        with contextlib.suppress(ProcessLookupError):
            # It ended between the check and the kill: nothing left to do.
            os.kill(pid, signal.SIGKILL)
    launcher.wait()


def test_wizard_up_prints_the_urls_and_leaves_nothing_running_after_sigterm(launched):
    text = launched.text
    gateway = f"http://127.0.0.1:{launched.port}"
    assert f"Math Wizard is up:  {gateway}/" in text
    node_urls = re.findall(r"node-\d +(http://127\.0\.0\.1:\d+) +pid \d+", text)
    assert len(node_urls) == 2, text
    assert re.search(r"valkey +valkey://wizard@127\.0\.0\.1:\d+/0", text), text
    assert requests.get(gateway + "/whoami", timeout=10).status_code == 200
    for url in node_urls:
        assert requests.get(url + "/healthz", timeout=10).status_code == 200

    started = launched.note_processes()
    # Valkey, nginx (master and worker), and for each node its
    # supervisor, API, worker and scheduler.
    assert len(started) >= 3 + 2 * 4, started

    launched.launcher.send_signal(signal.SIGTERM)
    assert launched.launcher.wait(60) == 0
    assert "stopped; nothing left running." in launched.text
    wait_for(launched.all_gone, timeout=10, what="every process gone")


def test_wizard_up_on_a_taken_port_says_so_in_one_line_and_exits_non_zero(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        finished = run_up_once(port, tmp_path)
    assert finished.returncode != 0
    lines = finished.stderr.splitlines()
    assert len(lines) == 1, finished.stderr
    assert f"port {port}" in lines[0] and "already in use" in lines[0]
    assert not (tmp_path / "valkey").exists(), "nothing should have started"


def test_wizard_up_recovers_a_gateway_killed_with_sigkill_and_guards_its_folder(launched):
    second = run_up_once(free_port(), launched.var_dir)
    assert second.returncode == 1
    assert "another `python -m wizard up` is using" in second.stderr
    nginx = int((launched.var_dir / "nginx" / "nginx.pid").read_text())

    os.kill(nginx, signal.SIGKILL)  # its worker is orphaned, still on the port

    def gateway_back():
        try:
            return requests.get(f"http://127.0.0.1:{launched.port}/whoami", timeout=2).ok
        except requests.ConnectionError:
            # Between the old nginx and the new one.
            return False

    wait_for(
        lambda: "nginx killed by SIGKILL; restarting it" in launched.text,
        timeout=10,
        what="the restart",
    )
    wait_for(gateway_back, timeout=20, what="the gateway answering again")
    launched.note_processes()
    launched.launcher.send_signal(signal.SIGTERM)
    assert launched.launcher.wait(60) == 0
    wait_for(launched.all_gone, timeout=10, what="every process gone")
    assert port_is_free("127.0.0.1", launched.port), "an orphaned nginx still holds the port"


@pytest.mark.parametrize(
    "method, path, body, status",
    [
        ("TRACE", "/", b"", 405),
        ("GET", "/add?a=" + "1" * 20000, b"", 414),
        ("POST", "/task", b"a=1&b=" + b"2" * 100_000, 413),
        ("GET", "/%00", b"", 400),
    ],
    ids=["trace", "uri-too-long", "body-too-large", "nul-in-path"],
)
def test_requests_the_gateway_refuses_get_problem_documents_too(
    cluster, method, path, body, status
):
    response = requests.request(method, cluster.url + path, data=body, timeout=10)

    assert response.status_code == status
    assert response.headers["Content-Type"] == "application/problem+json"
    assert response.json()["status"] == status and response.json()["handled_by"] == "gateway"
    assert response.headers["X-Request-ID"]


def test_a_valkey_url_replaces_the_embedded_valkey(valkey_server, client, tmp_path):
    with LocalCluster(
        gateway_port=free_port(),
        nodes=1,
        var_dir=tmp_path,
        valkey_url=valkey_server.url,
        node_env={"WIZARD_WORK_SECONDS": "0"},
    ) as local:
        accepted = requests.post(f"{local.url}/task?a=2&b=3", timeout=10).json()

        assert local.valkey is None, "no embedded Valkey when VALKEY_URL is given"
        assert not (tmp_path / "valkey").exists()
        assert client.exists(f"task:{accepted['task_id']}") == 1


def test_a_launcher_killed_with_sigkill_takes_its_whole_cluster_down(launched):
    launched.note_processes()

    launched.launcher.kill()
    launched.launcher.wait()

    wait_for(launched.all_gone, timeout=40, what="every process gone")
    assert port_is_free("127.0.0.1", launched.port)


def worker_stop_lines(var_dir: Path) -> list[str]:
    """The "worker stopping: ..." lines of every node's log, oldest first."""
    lines = []
    for log_file in sorted((var_dir / "logs").glob("node-*.log")):
        for line in log_file.read_text().splitlines():
            if line.startswith("{") and "worker stopping" in line:
                lines.append(json.loads(line)["event"])
    return lines


def test_a_launcher_killed_with_sigkill_lets_the_workers_record_their_tasks_first(tmp_path):
    # kill -9 of the launcher: every part is told at the same moment, but
    # Valkey (under its keeper) stops only after the nodes, so a worker that
    # finishes its task during the grace period records it, and the next
    # start runs none of them again: every task ends with attempts == 1.
    env = {**UP_ENV, "WIZARD_WORK_SECONDS": "0.5", "WIZARD_GRACE_SECONDS": "10"}
    var_dir = tmp_path / "var"
    first = launch(var_dir, tmp_path / "up-1.out", env)
    session = requests.Session()
    gateway = f"http://127.0.0.1:{first.port}"
    try:
        accepted = {}
        for n in range(15):
            response = session.post(f"{gateway}/task", params={"a": n, "b": 1}, timeout=10)
            assert response.status_code == 202, response.text
            accepted[response.json()["task_id"]] = n + 1

        def one_running():
            # Tasks are taken oldest first: the first one not complete yet
            # is running, or none is (pending, or a 429: ask again later).
            for task_id in accepted:
                response = session.get(f"{gateway}/tasks/{task_id}/status", timeout=10)
                status = response.json()["status"] if response.ok else None
                if status != "complete":
                    return status == "running"
            return False

        wait_for(one_running, timeout=30, interval=0.1, what="a worker holding a task")
        first.note_processes()
        first.launcher.kill()
        first.launcher.wait()
        wait_for(first.all_gone, timeout=60, what="every process of the first run gone")
    finally:
        stop_for_good(first.launcher, first.started)
    assert "the launcher died; waiting up to" in (var_dir / "logs" / "valkey.log").read_text()
    stops = worker_stop_lines(var_dir)
    assert stops and not [line for line in stops if "NOT recorded" in line], stops
    assert [line for line in stops if "while running a task: task" in line], stops

    second = launch(var_dir, tmp_path / "up-2.out", env)
    gateway = f"http://127.0.0.1:{second.port}"
    try:
        final: dict[str, dict] = {}

        def all_complete():
            # Only the unfinished ones, and slowly: the gateway limits the
            # requests per address (a 429 here only means "ask later").
            for task_id in set(accepted) - set(final):
                response = session.get(f"{gateway}/tasks/{task_id}/status", timeout=10)
                if response.ok and response.json()["status"] == "complete":
                    final[task_id] = response.json()
            return len(final) == len(accepted)

        wait_for(all_complete, timeout=90, interval=0.5, what="every task complete")
        assert {t: s["result"] for t, s in final.items()} == accepted
        assert {t: s["attempts"] for t, s in final.items() if s["attempts"] != 1} == {}
        second.note_processes()
        second.launcher.send_signal(signal.SIGTERM)
        assert second.launcher.wait(60) == 0
        wait_for(second.all_gone, timeout=10, what="every process of the second run gone")
    finally:
        stop_for_good(second.launcher, second.started)
        session.close()


def primary_of(gateway: str) -> dict | None:
    """/cluster's ``valkey`` part, or None while the gateway answers no 200
    (a 503 while there is no primary)."""
    try:
        response = requests.get(gateway + "/cluster", timeout=5)
    except requests.RequestException:
        # Between two primaries a node may be slow to answer: ask again.
        return None
    return response.json()["valkey"] if response.status_code == 200 else None


def test_wizard_up_ha_follows_a_primary_killed_with_sigkill_and_brings_it_back_as_a_replica(
    tmp_path,
):
    port, output = free_port(), tmp_path / "up.out"
    gateway = f"http://127.0.0.1:{port}"
    with open(output, "wb") as sink:
        launcher = subprocess.Popen(
            [*up_command(port, tmp_path / "var"), "--ha"],
            cwd=ROOT,
            env=UP_ENV,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    up = Launched(port, tmp_path / "var", output, launcher)
    try:
        wait_for(lambda: "stop: Ctrl+C" in up.text, timeout=90, interval=0.1)
        first = primary_of(gateway)
        assert first["via"] == "sentinel" and len(first["replicas"]) == 2, first
        pid = int(re.search(rf"valkey-\d +valkey://{first['primary']} +pid (\d+)", up.text)[1])
        up.note_processes()

        os.kill(pid, signal.SIGKILL)

        def promoted():
            now = primary_of(gateway)
            return now if now and now["primary"] != first["primary"] else None

        wait_for(promoted, timeout=60, interval=0.2, what="the nodes name a new primary")
        wait_for(
            lambda: requests.post(gateway + "/task", params={"a": 1, "b": 2}, timeout=10).ok,
            timeout=30,
            # 5 a second: under the gateway's 10 POST/s for one address.
            interval=0.2,
            what="a 202 through the new primary",
        )
        # The launcher restarts the killed server; the sentinels re-point it.
        back = wait_for(
            lambda: (p := promoted()) and len(p["replicas"]) == 2 and p,
            timeout=60,
            interval=0.2,
            what="the old primary back, as a replica",
        )
        assert first["primary"] in {r["address"] for r in back["replicas"]}
        up.note_processes()
        launcher.send_signal(signal.SIGTERM)
        assert launcher.wait(60) == 0
        # The launcher waited for each part by PID; what it SIGKILLed last
        # (a part's leftovers) may take a moment more to end on a busy machine.
        try:
            wait_for(up.all_gone, timeout=30, what="every process gone")
        except AssertionError as error:
            raise AssertionError(f"{error}; still running: {up.left_running()}") from None
    finally:
        stop_for_good(launcher, up.started)
