"""Operations: the math, as pure functions, and the checks on its operands.

The synchronous ``/add`` endpoint and the asynchronous workers share this
module, so both pay the same simulated cost and give the same answers::

    >>> parse_operand("a", "1.5")
    1.5
    >>> compute("add", 1, 2, work_seconds=0)
    3

Numbers keep their kind: integers stay integers (1 + 2 is 3), anything with
a decimal point or exponent is a float (1.5 + 2 is 3.5).

The simulated cost (``work_seconds``) is CPU work in pure Python, a fixed
amount measured once per process (:func:`steps_per_cpu_second`): it holds
the interpreter lock, so threads of one process share one core while worker
processes use one core each. No network or disk I/O happens here; the
calibration logs one line.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import sys
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

Number = int | float

#: Longest operand accepted, in characters (as text in a query or form).
MAX_OPERAND_CHARS = 64
#: Largest operand magnitude accepted; keeps every result finite and exact
#: enough to teach with.
MAX_MAGNITUDE = 1e15
#: Smallest nonzero operand magnitude accepted: the smallest normal double
#: (IEEE 754, about 2.2e-308); below it a number would underflow.
MIN_MAGNITUDE = sys.float_info.min


class InvalidOperand(ValueError):
    """Raised when an operand is missing, not a number, not finite, too long
    or too large. The message says which operand and what to send instead."""


class UnknownOperation(ValueError):
    """Raised when an operation name is not in :data:`OPERATIONS`."""


class OperationFailed(ArithmeticError):
    """Raised when an operation cannot give a finite result (division by
    zero, overflow). A permanent error: retrying gives the same answer."""


def parse_operand(name: str, raw: object) -> Number:
    """Turn one operand, as text from a query/form or a JSON value, into a number.

    ``"3"`` gives ``3`` (int); ``"3.0"``, ``"1e3"`` give floats; JSON numbers
    keep their type. Booleans are not numbers.

    Raises:
        InvalidOperand: missing, non-numeric, non-finite, longer than
            MAX_OPERAND_CHARS, of magnitude above MAX_MAGNITUDE, or nonzero
            and below MIN_MAGNITUDE (it would underflow).
    """
    if raw is None or raw == "":
        raise InvalidOperand(f"operand '{name}' is missing; send a number, e.g. {name}=2")
    if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
        raise InvalidOperand(f"operand '{name}' must be a number, got {type(raw).__name__}")
    if isinstance(raw, str):
        value = _parse_text(name, raw)
    else:
        value = raw
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidOperand(f"operand '{name}' must be a finite number, got {raw!r}")
    if abs(value) > MAX_MAGNITUDE:
        raise InvalidOperand(f"operand '{name}' must be at most 1e15 in magnitude, got {raw!r}")
    return value


def _parse_text(name: str, raw: str) -> Number:
    text = raw
    if text.strip() and text != text.strip():
        # Taken literally: int() and float() would skip the spaces silently.
        raise InvalidOperand(
            f"operand '{name}' has spaces around it ({raw!r}); "
            "send the number alone, without spaces"
        )
    if len(text) > MAX_OPERAND_CHARS:
        raise InvalidOperand(
            f"operand '{name}' is longer than {MAX_OPERAND_CHARS} characters; send a shorter number"
        )
    if not text.isascii() or "_" in text:
        raise InvalidOperand(f"operand '{name}' must be a plain decimal number, got {raw!r}")
    try:
        return int(text)
    except ValueError:
        # Not an integer literal: it may still be a decimal or exponent form.
        pass
    try:
        value = float(text)
    except ValueError:
        raise InvalidOperand(f"operand '{name}' must be a number, got {raw!r}") from None
    if _underflows(text, value):
        raise InvalidOperand(
            f"operand '{name}' is too close to 0 to be represented (it would underflow); "
            f"send 0, or a number of magnitude at least {MIN_MAGNITUDE:.1e}"
        )
    return value


def _underflows(text: str, value: float) -> bool:
    """True if ``text``, a nonzero number, parsed to 0.0 or to a subnormal
    float (below the smallest normal double, IEEE 754): silently losing the
    operand, as an overflow to infinity would."""
    if value != 0:
        return abs(value) < MIN_MAGNITUDE
    mantissa = text.lower().split("e", 1)[0]
    return any(digit in mantissa for digit in "123456789")


def _add(a: Number, b: Number) -> Number:
    return a + b


def _subtract(a: Number, b: Number) -> Number:
    return a - b


def _multiply(a: Number, b: Number) -> Number:
    return a * b


def _divide(a: Number, b: Number) -> Number:
    if b == 0:
        raise OperationFailed("division by zero")
    if isinstance(a, int) and isinstance(b, int) and a % b == 0:
        return a // b
    return a / b


def _crash(a: Number, b: Number) -> Number:
    # Chaos suite only (WIZARD_CHAOS_OPERATIONS=1): the worker process dies
    # mid-task, as it would on a segfault or the OOM killer.
    os._exit(70)


#: The operations every node knows, by name.
OPERATIONS: dict[str, Callable[[Number, Number], Number]] = {
    "add": _add,
    "subtract": _subtract,
    "multiply": _multiply,
    "divide": _divide,
}

#: Operations that exist only when WIZARD_CHAOS_OPERATIONS=1.
CHAOS_OPERATIONS: dict[str, Callable[[Number, Number], Number]] = {
    "crash": _crash,
}


def check_operation(name: str, *, chaos: bool = False) -> str:
    """Return ``name`` if it is a known operation.

    Raises:
        UnknownOperation: the name is not in OPERATIONS (or CHAOS_OPERATIONS
            when ``chaos`` is true).
    """
    if name in OPERATIONS or (chaos and name in CHAOS_OPERATIONS):
        return name
    known = ", ".join(OPERATIONS)
    raise UnknownOperation(f"unknown operation {name!r}; use one of: {known}")


#: CPU time the calibration spends measuring, seconds (once per process).
CALIBRATION_SECONDS = 0.02


#: Steps of simulated work between two calls of the ``checkpoint`` callback
#: (a few milliseconds of CPU): how soon a time limit is noticed.
CHECKPOINT_STEPS = 50_000

#: A callback the simulated work calls now and then; it raises to stop the
#: work (a time limit passed) and returns None to let it go on.
Checkpoint = Callable[[], None]


def _spin(steps: int, checkpoint: Checkpoint | None = None) -> int:
    """``steps`` rounds of pure-Python arithmetic: the simulated work.

    Pure Python on purpose: it holds the interpreter lock (GIL) all the time
    it runs, as a real Python computation would, so threads of one process
    take turns on one core while separate processes use separate cores.

    ``checkpoint`` is called every CHECKPOINT_STEPS steps: a cooperative time
    limit. Whatever it raises stops the work there and propagates, and can
    only be raised here, never in the middle of recording the result."""
    total = 0
    done = 0
    while done < steps:
        if checkpoint is not None:
            checkpoint()
        chunk = min(CHECKPOINT_STEPS, steps - done)
        for step in range(done, done + chunk):
            total = (total + step * step) % 1_000_003
        done += chunk
    return total


@functools.cache
def steps_per_cpu_second() -> float:
    """How many :func:`_spin` steps one CPU-second holds on this machine.

    Measured once per process (then cached) with the thread's own CPU clock
    (``time.thread_time``), so a busy machine or other threads waiting on the
    lock do not change the answer: the best of three runs of at least
    CALIBRATION_SECONDS each. Call it at start, before taking work.

    Raises:
        RuntimeError: the thread's CPU clock never moved (no such clock).
    """
    steps = 10_000
    rates = []
    for _ in range(40):  # 10,000 x 2^37 steps: no machine gets that far
        started = time.thread_time()
        _spin(steps)
        used = time.thread_time() - started
        if used < CALIBRATION_SECONDS:
            steps *= 2
            continue
        rates.append(steps / used)
        if len(rates) == 3:
            break
    if not rates:
        raise RuntimeError("the calibration of the simulated work measured no CPU time")
    return max(rates)


def calibrate(work_seconds: float) -> None:
    """Measure :func:`steps_per_cpu_second` now if there will be work to
    simulate (``work_seconds`` > 0), so the first task does not pay for it,
    and log the figure."""
    if work_seconds > 0:
        rate = steps_per_cpu_second()
        log.info(f"simulated work calibrated: {rate:,.0f} steps per CPU-second")


def simulate_work(seconds: float, checkpoint: Checkpoint | None = None) -> None:
    """Do ``seconds`` of CPU work as measured on an idle core: a fixed amount
    of pure-Python arithmetic (``seconds`` x :func:`steps_per_cpu_second`),
    not a deadline. Two requests sharing one process's interpreter lock take
    about twice as long each; two processes on two cores do not.

    Not a sleep either: a sleeping task would not show why the API must not
    do the work itself.

    ``checkpoint``: see :func:`_spin` (raises to stop the work early)."""
    _spin(round(seconds * steps_per_cpu_second()), checkpoint)


def compute(
    operation: str,
    a: Number,
    b: Number,
    *,
    work_seconds: float,
    checkpoint: Checkpoint | None = None,
) -> Number:
    """Run ``operation`` on ``a`` and ``b`` after ``work_seconds`` of CPU work.

    ``checkpoint`` is called before the operation and every few milliseconds
    of the work (:func:`_spin`); what it raises propagates (a worker's time
    limit: a cooperative deadline, not a signal that could land anywhere).

    Raises:
        UnknownOperation: the operation does not exist.
        OperationFailed: no finite result (division by zero, overflow).
    """
    function = OPERATIONS.get(operation) or CHAOS_OPERATIONS.get(operation)
    if function is None:
        raise UnknownOperation(f"unknown operation {operation!r}")
    if work_seconds > 0:
        simulate_work(work_seconds, checkpoint)
    if checkpoint is not None:
        checkpoint()
    result = function(a, b)
    if isinstance(result, float) and not math.isfinite(result):
        raise OperationFailed(f"{operation} of {a} and {b} has no finite result")
    return result
