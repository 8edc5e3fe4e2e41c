"""Supervisor: one node's parent process. Boring on purpose.

``python -m wizard node`` runs :func:`run_node`. It starts, with
``multiprocessing``:

- one API process (waitress serving the WSGI app: the producer),
- ``WIZARD_WORKERS`` worker processes (the consumers),
- one scheduler process (reaper and retry clock; only one node's acts).

A child that dies unexpectedly is restarted after an exponential backoff
(0.5 s, 1 s, 2 s ... capped at 30 s; reset once it has run for 10 s),
and the death is logged with its exit code. Each child runs under
:func:`faults.run_guarded`: an error that escapes any of its threads is
logged as JSON and ends it with ``faults.EXIT_CRASHED``, so a child never
lives on with a thread missing. The restarts are counted in Valkey
(``restarts:<node>``), where ``/readyz`` reads a restart loop
(``health.RESTART_LOOP`` deaths in a row) and ``/cluster`` shows every count.
The restart is logged with the new pid and the old one. Every process of the
node (this supervisor and each child, after each start) is recorded in
Valkey's ``processes`` hash for ``/cluster``, and each names itself for
``ps`` (:mod:`wizard.proctitle`): ``wizard node-1 supervisor``, ``wizard
node-1 api``, ``wizard node-1 worker w1``, ``wizard node-1 scheduler``.

The start method is ``spawn``, chosen deliberately: each child begins with a
fresh interpreter, so no Valkey socket, lock or thread of the parent leaks
into it, and each child builds its own connection (``fork`` would copy the
parent's open sockets).

Signals: SIGTERM or SIGINT asks every child to stop (SIGTERM); workers finish
their current task within ``WIZARD_GRACE_SECONDS``; the supervisor waits for
them, kills what is still there a few seconds after that, and exits 0. A
second signal stops the children at once.

If the supervisor itself dies (even by SIGKILL, which it cannot catch), each
child gets SIGTERM from Linux (``PR_SET_PDEATHSIG``, set first thing in the
child) and stops as above: no worker runs on without its supervisor.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import valkey

from . import faults, logs, membership, processes, proctitle, store
from .config import Settings

log = logging.getLogger(__name__)

#: Exit code of ``python -m wizard node`` after a clean stop.
EXIT_OK = 0

#: Restart backoff: first delay, cap, and how long a child must live for
#: its backoff to start over, seconds.
RESTART_FIRST = 0.5
RESTART_CAP = 30.0
RESTART_RESET_AFTER = 10.0

#: Extra time given to children after the grace period before SIGKILL, seconds.
KILL_MARGIN = 5.0

_SPAWN = multiprocessing.get_context("spawn")


@dataclass
class Child:
    """One supervised process: how to start it, the running process, and
    its restart bookkeeping."""

    name: str
    target: Callable[..., None]
    args: tuple
    #: What it is: ``api``, ``worker`` or ``scheduler``.
    role: str = ""
    process: multiprocessing.process.BaseProcess | None = None
    started_at: float = 0.0
    #: Restarts in a row (the backoff's exponent); back to 0 once it has
    #: run for RESTART_RESET_AFTER seconds.
    restarts: int = 0
    #: Restarts since the node started.
    total_restarts: int = 0
    restart_at: float | None = None

    def start(self) -> None:
        """Spawn the process (a fresh interpreter), its target run by
        :func:`faults.run_guarded`."""
        self.process = _SPAWN.Process(
            target=_child_main, args=(os.getpid(), self.target, *self.args), name=self.name
        )
        self.process.start()
        self.started_at = time.monotonic()
        self.restart_at = None
        log.info(f"started {self.name}", extra={"pid": self.process.pid})

    def alive(self) -> bool:
        return self.process is not None and self.process.is_alive()


class Supervisor:
    """Starts the children of one node, restarts the dead, stops them all."""

    def __init__(self, settings: Settings) -> None:
        from .scheduler import run_scheduler
        from .server import run_api
        from .worker import run_worker

        self.settings = settings
        self.children = [Child("api", run_api, (settings,), "api")]
        for n in range(1, settings.workers + 1):
            worker_id = membership.worker_id(settings.node_id, n)
            self.children.append(Child(worker_id, run_worker, (settings, worker_id), "worker"))
        self.children.append(Child("scheduler", run_scheduler, (settings,), "scheduler"))
        self.stop_reason: str | None = None
        self._wake = threading.Event()
        self.client = store.connect(settings)
        #: (name, pid, role) of processes started but not yet recorded in
        #: Valkey's process registry (it was away meanwhile).
        self._unrecorded: list[tuple[str, int, str]] = []

    def request_stop(self, signum, frame) -> None:
        """Signal handler: first signal stops gracefully, second at once."""
        name = signal.Signals(signum).name
        if self.stop_reason is not None:
            log.warning(f"second {name}: stopping children now")
            self._signal_all(signal.SIGKILL)
            return
        self.stop_reason = name
        self._wake.set()

    def run(self) -> int:
        """Start everything, watch it, stop on a signal. Returns the exit code."""
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        log.info("node starting", extra={"pid": os.getpid()})
        self._write(lambda: self.client.delete(store.restarts_key(self.settings.node_id)))
        self._unrecorded.append((f"{self.settings.node_id}/supervisor", os.getpid(), "supervisor"))
        for child in self.children:
            child.start()
            self._note_started(child)
        while self.stop_reason is None:
            self._restart_the_dead()
            self._record_processes()
            self._wake.wait(0.2)
        log.info(f"node stopping on {self.stop_reason}: asking children to finish")
        self._stop_children()
        # A clean stop leaves /cluster's process list (as its workers leave
        # the membership by signing off); a node that dies stays listed
        # until the next cluster start.
        self._write(lambda: membership.forget_node_processes(self.client, self.settings.node_id))
        log.info("node stopped")
        return EXIT_OK

    def _restart_the_dead(self) -> None:
        now = time.monotonic()
        for child in self.children:
            if child.alive():
                self._forgive(child, now)
                continue
            if child.restart_at is None:
                child.restart_at = now + self._backoff(child, now)
                log.warning(
                    f"{child.name} died; restarting",
                    extra={
                        "pid": child.process.pid,
                        "exit_code": child.process.exitcode,
                        "delay_seconds": round(child.restart_at - now, 3),
                    },
                )
            elif now >= child.restart_at:
                child.restarts += 1
                child.total_restarts += 1
                exit_code = child.process.exitcode
                previous = child.process.pid
                child.start()
                self._publish(child, exit_code)
                self._note_started(child)
                log.warning(
                    f"{child.name} restarted",
                    extra={"pid": child.process.pid, "previous_pid": previous},
                )

    def _forgive(self, child: Child, now: float) -> None:
        """A child that has run RESTART_RESET_AFTER seconds is out of its
        restart loop: its backoff starts over."""
        if child.restarts and now - child.started_at > RESTART_RESET_AFTER:
            child.restarts = 0
            self._publish(child, None)

    def _note_started(self, child: Child) -> None:
        """Queue ``child``'s new pid for the process registry."""
        name = _process_name(self.settings.node_id, child.name)
        self._unrecorded.append((name, child.process.pid, child.role))

    def _record_processes(self) -> None:
        """Record the pids started since the last call in the ``processes``
        hash (:func:`membership.record_process`); if Valkey is away, keep
        them for the next round."""
        node = self.settings.node_id
        while self._unrecorded:
            name, pid, role = self._unrecorded[0]
            try:
                membership.record_process(self.client, name, pid=pid, node=node, role=role)
            except valkey.ValkeyError as error:
                # Valkey away or refusing (OOM, an older ACL...): the workers
                # report the trouble; the registry only serves /cluster, so
                # it never stops a node: try again next round.
                log.debug("process not recorded yet", extra={"error": str(error)})
                return
            self._unrecorded.pop(0)

    @staticmethod
    def _backoff(child: Child, now: float) -> float:
        return min(RESTART_CAP, RESTART_FIRST * 2**child.restarts)

    def _publish(self, child: Child, exit_code: int | None) -> None:
        """Record ``child``'s restart counts in ``restarts:<node>``."""
        card = {
            "restarts": child.total_restarts,
            "in_a_row": child.restarts,
            "exit_code": exit_code,
            "at": time.time(),
        }
        key = store.restarts_key(self.settings.node_id)
        self._write(lambda: self.client.hset(key, child.name, json.dumps(card)))

    def _write(self, write: Callable[[], object]) -> None:
        """Write to Valkey, best effort: the supervisor never waits on it."""
        try:
            write()
        except valkey.ValkeyError as error:
            kind = faults.valkey_trouble(error)
            if kind is None:
                raise
            # Valkey in trouble: this count is lost, the children go on.
            log.info("restart count not recorded", extra={"kind": kind})

    def _signal_all(self, signum: int) -> None:
        for child in self.children:
            if child.alive():
                try:
                    os.kill(child.process.pid, signum)
                except ProcessLookupError:
                    # It exited between the check and the signal: fine.
                    pass

    def _stop_children(self) -> None:
        self._signal_all(signal.SIGTERM)
        deadline = time.monotonic() + self.settings.grace_seconds + KILL_MARGIN
        for child in self.children:
            if child.process is None:
                continue
            child.process.join(max(0.0, deadline - time.monotonic()))
            if child.process.is_alive():
                log.warning(f"{child.name} did not stop in time; killing it")
                child.process.kill()
                child.process.join()


def _process_name(node_id: str, child_name: str) -> str:
    """The registry name of a child: ``node-1/api``, ``node-1/w1`` (a
    worker's name is already its id), ``node-1/scheduler``."""
    if child_name.startswith(f"{node_id}/"):
        return child_name
    return f"{node_id}/{child_name}"


def _child_main(parent_pid: int, target: Callable[..., None], *args) -> None:
    """A child's first steps: end with the supervisor (SIGTERM when it dies,
    even by SIGKILL: :func:`processes.end_with_parent`), then run ``target``
    under :func:`faults.run_guarded`. Top-level, so ``spawn`` finds it by name."""
    processes.end_with_parent(parent_pid)
    faults.run_guarded(target, *args)


def run_node(settings: Settings) -> int:
    """``python -m wizard node``: run one node until SIGTERM/SIGINT."""
    logs.configure(settings.log_level, node=settings.node_id, process="supervisor")
    faults.install_crash_hooks()
    proctitle.name(node_id=settings.node_id, role="supervisor")
    return Supervisor(settings).run()
