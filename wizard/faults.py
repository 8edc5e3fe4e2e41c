"""Faults: which errors a loop waits out, and which end its process.

Every loop of a node (a worker's task loop and heartbeat, the scheduler's
rounds, the API's watchdog) talks to Valkey, and Valkey has bad days. Two
kinds of trouble are told apart here, and each has exactly one answer:

- **Valkey trouble** (:func:`valkey_trouble` names its kind): the connection
  broke or timed out, or Valkey answered with an error that passes by itself:
  ``OOM`` (full, with ``noeviction``), ``LOADING`` (replaying its AOF),
  ``READONLY``, ``BUSY`` (a long script), ``NOSCRIPT`` (scripts flushed),
  ``MASTERDOWN``, ``NOREPLICAS``, ``TRYAGAIN``, ``EXECABORT`` (a transaction
  refused as a whole) and a transaction whose watched key changed (``WATCH``).
  The loop logs the first one of a spell as one JSON line naming its kind,
  backs off (growing, capped, jittered delays) and tries again; when Valkey
  answers again it logs that once too. A :class:`Spell` keeps that count.
- **Anything else** is a bug or an impossible state. It is not caught: it
  escapes the thread, :func:`install_crash_hooks` logs it as one JSON line
  with its traceback, and the process exits with :data:`EXIT_CRASHED`; its
  supervisor restarts it (and counts the restart). A task the process held
  is handed back by the reaper when its lease runs out: nothing is lost, and
  nothing keeps running with a thread missing.

    >>> spell = Spell("heartbeat")
    >>> spell.failed(valkey.exceptions.OutOfMemoryError("command not allowed"))  # doctest: +SKIP
    0.13                      # logged: "Valkey trouble in heartbeat: OOM; backing off"
    >>> spell.recovered()                                            # doctest: +SKIP

For the chaos suite, :func:`inject` raises :class:`InjectedFault` in a named
thread when ``WIZARD_CHAOS_OPERATIONS=1`` and the key
``chaos:fault:<node>:<thread>`` exists (it is deleted as it is read, so the
fault fires once).
"""

from __future__ import annotations

import logging
import os
import random
import sys
import threading
import time
import traceback

import valkey

from . import store

log = logging.getLogger(__name__)

#: Exit code of a process ended by an error no loop knows how to wait out.
EXIT_CRASHED = 3

#: Longest pause between two attempts while Valkey is in trouble, seconds.
MAX_RETRY_DELAY = 5.0

#: Error replies that pass by themselves (the first word of Valkey's reply).
TRANSIENT_REPLIES = (
    "OOM",
    "LOADING",
    "READONLY",
    "BUSY",
    "NOSCRIPT",
    "MASTERDOWN",
    "NOREPLICAS",
    "TRYAGAIN",
    "EXECABORT",
)

#: valkey-py's own classes for some replies (it strips the reply's first word).
_REPLY_CLASSES = (
    (valkey.exceptions.OutOfMemoryError, "OOM"),
    (valkey.exceptions.BusyLoadingError, "LOADING"),
    (valkey.exceptions.ReadOnlyError, "READONLY"),
    (valkey.exceptions.NoScriptError, "NOSCRIPT"),
    (valkey.exceptions.ExecAbortError, "EXECABORT"),
    (valkey.exceptions.TryAgainError, "TRYAGAIN"),
    (valkey.exceptions.MasterDownError, "MASTERDOWN"),
    (valkey.exceptions.WatchError, "WATCH"),
    (valkey.TimeoutError, "timeout"),
    (valkey.ConnectionError, "connection"),
)


class InjectedFault(RuntimeError):
    """Raised in a thread on purpose by the chaos suite (:func:`inject`): an
    error no loop expects, standing for a bug."""


def valkey_trouble(error: BaseException) -> str | None:
    """The kind of Valkey trouble ``error`` is, or None if it is none.

    Kinds: ``"connection"``, ``"timeout"``, ``"WATCH"``, or the first word
    of a transient error reply (:data:`TRANSIENT_REPLIES`), also when Valkey
    reports it from inside a script or a pipeline. Any other error (a
    malformed command, a wrong type: a bug) gives None.
    """
    for kind_class, kind in _REPLY_CLASSES:
        if isinstance(error, kind_class):
            return kind
    if not isinstance(error, valkey.ResponseError):
        return None
    words = str(error).replace("-", " ").replace(":", " ").split()
    for word in words:
        if word in TRANSIENT_REPLIES:
            return word
    return None


def retry_delay(failures: int) -> float:
    """Growing, capped, jittered delay before attempt ``failures`` + 1
    (``failures`` = 1, 2, ...), seconds: "full jitter" between 0.05 s and
    min(MAX_RETRY_DELAY, 0.1 * 2**failures), as in the AWS Architecture
    Blog, "Exponential Backoff And Jitter" (2015)."""
    ceiling = min(MAX_RETRY_DELAY, 0.1 * 2**failures)
    return max(0.05, random.uniform(0, ceiling))


class Spell:
    """One loop's current run of Valkey trouble: logs its start once (with
    its kind), a change of kind once, and its end once, with how long it
    lasted and how many attempts failed. Not thread-safe: one per loop.

    ``what`` names the loop in the log lines (``"heartbeat"``, ...).
    """

    def __init__(self, what: str) -> None:
        self.what = what
        self.failures = 0
        self.kind: str | None = None
        self.since = 0.0

    def failed(self, error: BaseException) -> float:
        """Count one failed attempt; returns how long to wait before the next,
        seconds. Logs a warning only when a spell starts or changes kind."""
        kind = valkey_trouble(error) or type(error).__name__
        if self.failures == 0:
            self.since = time.monotonic()
        self.failures += 1
        delay = retry_delay(self.failures)
        if kind != self.kind:
            log.warning(
                f"Valkey trouble in {self.what}: {kind}; backing off and retrying",
                extra={"kind": kind, "error": str(error), "delay_seconds": round(delay, 3)},
            )
            self.kind = kind
        return delay

    def recovered(self) -> None:
        """Note a successful attempt; logs the end of a spell, if one ran."""
        if self.failures == 0:
            return
        lasted = time.monotonic() - self.since
        log.info(
            f"Valkey answering again in {self.what} after {lasted:.1f} s "
            f"({self.failures} failed attempts)",
            extra={"kind": self.kind, "duration_ms": round(lasted * 1000, 3)},
        )
        self.failures = 0
        self.kind = None


def inject(client: valkey.Valkey, chaos: bool, node_id: str, thread: str) -> None:
    """Chaos suite only: raise :class:`InjectedFault` once if the fault key
    of ``thread`` on ``node_id`` was set (GETDEL: read and removed in one
    step). Does nothing unless ``chaos`` (``WIZARD_CHAOS_OPERATIONS``).

    Raises:
        InjectedFault: the key was there.
        valkey.ValkeyError: Valkey trouble while reading it.
    """
    if not chaos:
        return
    if client.getdel(store.chaos_fault_key(node_id, thread)) is not None:
        raise InjectedFault(f"fault injected in the {thread} thread by the chaos suite")


def install_crash_hooks() -> None:
    """Make any exception that escapes a thread (``threading.excepthook``) or
    the main thread (``sys.excepthook``) end this process: logged as one JSON
    line with its traceback, then exit :data:`EXIT_CRASHED` at once (no
    cleanup that could hang). Call once per process, after logging is set."""
    threading.excepthook = _thread_crashed
    sys.excepthook = _main_crashed


def _thread_crashed(hook: threading.ExceptHookArgs) -> None:
    if hook.exc_type is SystemExit:
        # A thread that calls sys.exit() ends only itself, as Python intends.
        return
    thread = hook.thread.name if hook.thread is not None else "unknown"
    crash(thread, hook.exc_type, hook.exc_value, hook.exc_traceback)


def _main_crashed(exc_type, exc_value, exc_traceback) -> None:
    crash("main", exc_type, exc_value, exc_traceback)


def crash(thread: str, exc_type, exc_value, exc_traceback) -> None:
    """Log an error that escaped ``thread`` as one JSON line and end the
    process with :data:`EXIT_CRASHED`. Never returns."""
    text = "".join(traceback.format_exception(exc_type, exc_value, exc_traceback))
    try:
        log.critical(
            f"unexpected error escaped the {thread} thread; exiting so the supervisor "
            f"restarts this process: {exc_type.__name__}: {exc_value}",
            extra={"crashed_thread": thread, "exit_code": EXIT_CRASHED, "traceback": text},
        )
        for handler in logging.getLogger().handlers:
            handler.flush()
    finally:
        os._exit(EXIT_CRASHED)


def run_guarded(target, *args) -> None:
    """Run ``target(*args)`` as a child process's main function, with
    :func:`install_crash_hooks` in place. An exception escaping it goes to
    :func:`crash` instead of multiprocessing's plain-text traceback on
    stderr. Top-level, so ``spawn`` can start it by name."""
    install_crash_hooks()
    try:
        target(*args)
    except Exception:
        # The main thread's boundary: log as JSON and exit non-zero.
        crash("main", *sys.exc_info())
