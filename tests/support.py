"""Helpers shared by the tests: waiting on conditions and calling WSGI apps.

Never sleep a guessed delay: wait for the condition, with a deadline.
"""

from __future__ import annotations

import fcntl
import http.client
import io
import json
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlencode
from wsgiref.util import setup_testing_defaults

import pytest

from wizard.processes import process_start

T = TypeVar("T")


def wait_for(
    condition: Callable[[], T], *, timeout: float = 10.0, interval: float = 0.02, what: str = ""
) -> T:
    """Call ``condition`` until it returns something truthy; return that.

    Raises:
        AssertionError: ``timeout`` seconds passed first.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what or condition}")
        time.sleep(interval)


def alive(pid: int) -> bool:
    """True if process ``pid`` runs and is not a zombie waiting to be reaped
    (Linux /proc: the state letter after the command name)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        # No such process any more (ESRCH if it exited between open and read).
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def note_running(pids: Iterable[int]) -> dict[int, str]:
    """Each of ``pids`` that runs now, with its start time (pid -> clock
    ticks since boot, /proc), to check later with :func:`still_running`.

    A process listed a moment ago may be a zombie by now (a Valkey fork
    child that finished its replica's copy, waiting for its parent's
    waitpid) or gone: it is left out. Noted with no start time, it would
    look "still running" forever, as a gone process has none either."""
    noted = {}
    for pid in pids:
        started = process_start(pid)
        if started is not None:
            noted[pid] = started
    return noted


def still_running(noted: dict[int, str]) -> list[int]:
    """The PIDs in ``noted`` (from :func:`note_running`) whose process still
    runs: same start time, so not a later process that reused the PID."""
    return [pid for pid, at in noted.items() if process_start(pid) == at]


def command_line(pid: int) -> str:
    """Process ``pid``'s command line (as ps shows it), or "" if it is gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        # It ended meanwhile.
        return ""


def save_results(path: Path, results: dict) -> None:
    """Merge ``results`` (scenario name -> counts) into the JSON file ``path``.

    ``make test`` spreads the test files over several pytest processes
    (pytest-xdist), so scenarios of one run are measured in different
    processes: each adds its own under a file lock. A file left by an earlier
    run (another ``PYTEST_XDIST_TESTRUNUID``, or another process when xdist
    is not used) is replaced, never mixed with this run's figures.
    """
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID") or f"pid-{os.getpid()}"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            stored = json.loads(path.read_text())
        except (OSError, ValueError):
            # No file yet, or one cut short by an interrupted run: start afresh.
            stored = {}
        merged = stored if stored.get("_run") == run else {"_run": run}
        earlier = dict(merged)
        merged.update(results)
        # Several processes of one run: the run spans from the first start
        # to the last finish.
        for key, pick in (("_started", min), ("_finished", max)):
            if key in earlier and key in results:
                merged[key] = pick(earlier[key], results[key])
        path.write_text(json.dumps(merged, indent=2, sort_keys=True))


def results_reporter(path: Path, results: dict, title: str):
    """A session-scoped, autouse pytest fixture for a conftest: once the
    session ends, it merges ``results`` (scenario name -> counts, filled by
    the tests) into ``path`` with :func:`save_results` and prints them under
    ``title``. It also records ``_started`` and ``_finished`` (Unix seconds:
    from the first test of its directory to the end of the session), so a
    run's duration is measured, not typed. Use::

        report_results = results_reporter(ROOT / "var" / "chaos-results.json", RESULTS, "chaos")
    """

    @pytest.fixture(scope="session", autouse=True)
    def report_results():
        started = time.time()
        yield
        if results:
            timing = {"_started": round(started, 1), "_finished": round(time.time(), 1)}
            save_results(path, {**results, **timing})
            print(f"\n{title} results:", json.dumps(results, sort_keys=True))

    return report_results


class WsgiResponse:
    """What a WSGI app answered: status code, headers (dict), body bytes."""

    def __init__(self, status: str, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status = int(status.split()[0])
        self.headers = dict(headers)
        self.body = body

    def json(self):
        return json.loads(self.body)


def call(
    app,
    method: str,
    path: str,
    *,
    query: dict | list[tuple[str, str]] | None = None,
    body: bytes = b"",
    content_type: str = "",
    headers: dict[str, str] | None = None,
    remote_addr: str = "",
) -> WsgiResponse:
    """Call a WSGI ``app`` in-process with a ``wsgiref`` environ, from peer
    address ``remote_addr`` (none by default: an "unknown" client). ``query``
    may be a list of (name, value) pairs to repeat a name."""
    environ: dict = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": urlencode(query or {}),
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
    }
    if content_type:
        environ["CONTENT_TYPE"] = content_type
    if remote_addr:
        environ["REMOTE_ADDR"] = remote_addr
    for name, value in (headers or {}).items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    setup_testing_defaults(environ)
    captured = {}

    def start_response(status, response_headers, exc_info=None):
        captured["status"], captured["headers"] = status, response_headers

    chunks = app(environ, start_response)
    return WsgiResponse(captured["status"], captured["headers"], b"".join(chunks))


class HttpAnswer:
    """An HTTP answer read off a real socket: status, headers, body bytes."""

    def __init__(self, response: http.client.HTTPResponse) -> None:
        self.status = response.status
        self.headers = {name.lower(): value for name, value in response.getheaders()}
        self.body = response.read()

    def json(self):
        return json.loads(self.body)


def request_from(
    source: str,
    url: str,
    method: str,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    timeout: float = 30.0,
) -> HttpAnswer:
    """One HTTP request to ``url`` (``http://host:port``) from the local
    address ``source`` (e.g. ``127.0.0.2``: every 127.x address is this
    machine), so a server sees a real, distinct client address."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    connection = http.client.HTTPConnection(
        host, int(port), timeout=timeout, source_address=(source, 0)
    )
    try:
        connection.request(method, path, body=body, headers=headers or {})
        return HttpAnswer(connection.getresponse())
    finally:
        connection.close()
