"""The loop of a consumer process: call one step again and again, and ride
out Valkey outages. The worker and the scheduler both run in it.

    >>> run_steps(worker.work_once, stopped=lambda: worker.stop_reason is not None,
    ...           stop=worker.stop, pause=wake.wait, what="worker step")  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Callable

import valkey

log = logging.getLogger(__name__)

#: Longest pause between reconnection attempts to Valkey, seconds.
MAX_RECONNECT_DELAY = 5.0

#: Errors that mean "Valkey is unreachable right now" (BusyLoadingError,
#: raised while Valkey reloads its AOF, is a ConnectionError).
VALKEY_DOWN = (valkey.ConnectionError, valkey.TimeoutError)


def reconnect_delay(failures: int) -> float:
    """Growing, capped, jittered delay before reconnection attempt
    ``failures`` (1, 2, ...), seconds: "full jitter" between 0.05 s and
    min(MAX_RECONNECT_DELAY, 0.1 * 2**failures), as in the AWS Architecture
    Blog, "Exponential Backoff And Jitter" (2015)."""
    ceiling = min(MAX_RECONNECT_DELAY, 0.1 * 2**failures)
    return max(0.05, random.uniform(0, ceiling))


def run_steps(
    step: Callable[[], object],
    *,
    stopped: Callable[[], bool],
    stop: Callable[[str], None],
    pause: Callable[[float], object],
    what: str,
) -> None:
    """Call ``step`` until ``stopped()``: the loop of the worker and of the
    scheduler. While Valkey is unreachable it backs off (growing, capped,
    jittered: :func:`reconnect_delay`) and resumes by itself when Valkey is
    back; ``pause(seconds)`` waits, and returns early when a stop is asked.
    Any other error is logged with its traceback (the one broad ``except`` of
    a consumer) and the loop goes on after a second. If the parent process
    (the supervisor) disappears, ``stop`` is called with that reason."""
    parent = os.getppid()
    failures = 0
    while not stopped():
        try:
            step()
            failures = 0
        except VALKEY_DOWN as error:
            failures += 1
            delay = reconnect_delay(failures)
            log.warning(
                "Valkey unreachable; backing off",
                extra={"error": str(error), "delay_seconds": round(delay, 3)},
            )
            pause(delay)
        except Exception:
            # Boundary of one step: log the traceback, keep serving.
            log.exception(f"unexpected error in a {what}")
            pause(1.0)
        if os.getppid() != parent:
            stop("the supervisor is gone")
