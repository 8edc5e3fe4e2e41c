"""The loop of a consumer process: call one step again and again, and ride
out Valkey's bad days. The worker, its heartbeat thread and the scheduler
all run in it; what counts as a bad day is decided in :mod:`wizard.faults`.

    >>> run_steps(worker.work_once, stopped=lambda: worker.stop_reason is not None,
    ...           stop=worker.stop, pause=wake.wait, what="worker step")  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import TypeVar

import valkey

from .faults import Spell, valkey_trouble

log = logging.getLogger(__name__)

T = TypeVar("T")


def run_steps(
    step: Callable[[], object],
    *,
    stopped: Callable[[], bool],
    stop: Callable[[str], None],
    pause: Callable[[float], object],
    what: str,
) -> None:
    """Call ``step`` until ``stopped()``: the loop of the worker, of its
    heartbeat and of the scheduler. While Valkey is in trouble (down, full,
    loading, ...: :func:`wizard.faults.valkey_trouble`) it backs off with a
    :class:`wizard.faults.Spell`, which logs the spell once, and resumes by
    itself when Valkey answers again; ``pause(seconds)`` waits, and returns
    early when a stop is asked. Any other error escapes, on purpose: the
    process's crash hook logs it and ends the process, and its supervisor
    restarts it (see :mod:`wizard.faults`). If the parent process (the
    supervisor) disappears, ``stop`` is called with that reason."""
    parent = os.getppid()
    spell = Spell(what)
    while not stopped():
        try:
            step()
        except valkey.ValkeyError as error:
            if valkey_trouble(error) is None:
                raise
            # Valkey's bad day: wait it out, logged once per spell.
            pause(spell.failed(error))
        else:
            spell.recovered()
        if os.getppid() != parent:
            stop("the supervisor is gone")


def call_through(write: Callable[[], T], *, what: str, within: float, sleep=time.sleep) -> T:
    """Call ``write`` until it gets through Valkey's trouble, for at most
    ``within`` seconds; for writes that are safe to repeat (fenced scripts).

    Raises:
        valkey.ValkeyError: still in trouble after ``within`` seconds, or an
            error that is no Valkey trouble.
    """
    deadline = time.monotonic() + within
    spell = Spell(what)
    while True:
        try:
            result = write()
        except valkey.ValkeyError as error:
            if valkey_trouble(error) is None or time.monotonic() > deadline:
                raise
            # Valkey's bad day: keep what we have and try again.
            sleep(spell.failed(error))
            continue
        spell.recovered()
        return result
