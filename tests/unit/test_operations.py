"""The math and the checks on its operands: pure functions, no servers."""

from __future__ import annotations

import time

import pytest

from wizard import operations
from wizard.operations import (
    MAX_OPERAND_CHARS,
    InvalidOperand,
    OperationFailed,
    UnknownOperation,
    check_operation,
    compute,
    parse_operand,
)


def run(operation, a, b):
    return compute(operation, a, b, work_seconds=0)


def same(value, expected) -> bool:
    """Equal in value and in kind (int stays int, float stays float)."""
    return type(value) is type(expected) and value == expected


# --- the four operations --------------------------------------------------


@pytest.mark.parametrize(
    "operation, a, b, expected",
    [
        ("add", 1, 2, 3),
        ("add", 1.5, 2, 3.5),
        ("add", -1, 1, 0),
        ("subtract", 5, 7, -2),
        ("subtract", 1, 2.5, -1.5),
        ("multiply", 6, 7, 42),
        ("multiply", 0.5, 4, 2.0),
        ("multiply", 10**15, 10**15, 10**30),
        ("divide", 6, 3, 2),
        ("divide", -6, 3, -2),
        ("divide", 7, 2, 3.5),
        ("divide", 1, 3, 1 / 3),
        ("divide", 6.0, 3, 2.0),
    ],
)
def test_each_operation_gives_the_right_answer_and_keeps_the_kind_of_number(
    operation, a, b, expected
):
    assert same(run(operation, a, b), expected)


def test_one_plus_two_is_the_integer_three():
    assert same(run("add", 1, 2), 3)


def test_one_and_a_half_plus_two_is_three_and_a_half():
    assert same(run("add", 1.5, 2), 3.5)


def test_dividing_integers_that_divide_exactly_stays_an_integer():
    assert same(run("divide", 10**15, 5), 2 * 10**14)


def test_dividing_integers_that_do_not_divide_exactly_gives_a_float():
    assert same(run("divide", 1, 4), 0.25)


@pytest.mark.parametrize("a", [1, 0, -3, 2.5, 0.0])
@pytest.mark.parametrize("zero", [0, 0.0])
def test_division_by_zero_raises_operation_failed(a, zero):
    with pytest.raises(OperationFailed, match="division by zero"):
        run("divide", a, zero)


def test_a_result_that_overflows_raises_operation_failed_instead_of_infinity():
    with pytest.raises(OperationFailed, match="no finite result"):
        run("divide", 1e15, 1e-300)


def test_an_unknown_operation_is_refused_by_compute():
    with pytest.raises(UnknownOperation):
        run("power", 2, 3)


def test_simulated_work_is_a_fixed_amount_of_cpu_work_not_a_deadline(monkeypatch):
    # The same work_seconds is always the same number of steps, however
    # long they take: on a busy core the work lasts longer, as real work does.
    rate = operations.steps_per_cpu_second()  # calibrated before the spy below
    steps = []
    monkeypatch.setattr(operations, "_spin", lambda count, checkpoint=None: steps.append(count))

    assert compute("add", 1, 2, work_seconds=0.05) == 3
    compute("add", 1, 2, work_seconds=0.05)
    compute("add", 1, 2, work_seconds=0.1)

    assert steps[0] == steps[1] == round(0.05 * rate) > 0
    assert steps[2] == round(0.1 * rate)


def test_a_checkpoint_that_raises_stops_the_work_before_the_operation_runs():
    calls = []

    def checkpoint():
        calls.append(1)
        if len(calls) == 3:
            raise TimeoutError("time is up")

    steps = operations.CHECKPOINT_STEPS * 10
    with pytest.raises(TimeoutError):
        operations._spin(steps, checkpoint)
    assert len(calls) == 3  # stopped at the third checkpoint, not at the end


def test_the_calibration_measures_the_threads_cpu_clock_once():
    first = operations.steps_per_cpu_second()
    used = time.thread_time()
    assert operations.steps_per_cpu_second() == first > 0
    assert time.thread_time() - used < operations.CALIBRATION_SECONDS


# --- operation names ------------------------------------------------------


@pytest.mark.parametrize("name", ["add", "subtract", "multiply", "divide"])
def test_the_four_operations_are_known(name):
    assert check_operation(name) == name


@pytest.mark.parametrize("name", ["", "ADD", "power", "add ", "__class__"])
def test_an_unknown_operation_name_is_refused_with_the_list_of_known_ones(name):
    with pytest.raises(UnknownOperation, match="add, subtract, multiply, divide"):
        check_operation(name)


def test_the_crash_operation_exists_only_when_chaos_operations_are_on():
    with pytest.raises(UnknownOperation):
        check_operation("crash")
    assert check_operation("crash", chaos=True) == "crash"


# --- operands -------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("3", 3),
        ("-3", -3),
        ("+5", 5),
        ("0", 0),
        ("1.5", 1.5),
        ("3.0", 3.0),
        ("1e3", 1000.0),
        ("-2.5e-3", -0.0025),
        ("1000000000000000", 10**15),
        ("1e15", 1e15),
        (3, 3),
        (1.5, 1.5),
        (-(10**15), -(10**15)),
    ],
)
def test_a_valid_operand_becomes_a_number_of_the_same_kind(raw, expected):
    assert same(parse_operand("a", raw), expected)


@pytest.mark.parametrize(
    "raw, says",
    [
        (None, "missing"),
        ("", "missing"),
        ("abc", "must be a number"),
        (" ", "must be a number"),
        ("0x10", "must be a number"),
        ("1,5", "must be a number"),
        (" 7 ", "spaces around it (' 7 '); send the number alone, without spaces"),
        ("7\t", "spaces around it"),
        ("nan", "finite"),
        ("NaN", "finite"),
        ("inf", "finite"),
        ("-Infinity", "finite"),
        ("1e400", "finite"),
        ("1e-400", "underflow"),
        ("-2.5e-999", "underflow"),
        ("1e-310", "underflow"),
        (float("nan"), "finite"),
        (float("inf"), "finite"),
        ("1_000", "plain decimal"),
        ("١٢", "plain decimal"),
        ("１２", "plain decimal"),
        ("1" * (MAX_OPERAND_CHARS + 1), f"longer than {MAX_OPERAND_CHARS}"),
        (1e16, "at most 1e15"),
        (10**16, "at most 1e15"),
        ("1e16", "at most 1e15"),
        ("-10000000000000001", "at most 1e15"),
        (True, "must be a number, got bool"),
        (False, "must be a number, got bool"),
        ([1], "must be a number, got list"),
        ({"x": 1}, "must be a number, got dict"),
    ],
)
def test_an_invalid_operand_is_refused_with_a_message_naming_it(raw, says):
    with pytest.raises(InvalidOperand) as refused:
        parse_operand("b", raw)
    message = str(refused.value)
    assert "'b'" in message
    assert says in message


def test_a_missing_operand_message_shows_an_example_to_send():
    with pytest.raises(InvalidOperand, match=r"e\.g\. a=2"):
        parse_operand("a", None)


def test_an_operand_of_exactly_the_longest_length_is_still_accepted():
    text = "0" * (MAX_OPERAND_CHARS - 1) + "7"
    assert parse_operand("a", text) == 7


@pytest.mark.parametrize("raw, expected", [("0e-400", 0.0), ("-0.000", -0.0), ("1e-300", 1e-300)])
def test_zero_written_any_way_and_tiny_normal_numbers_are_not_underflow(raw, expected):
    assert parse_operand("a", raw) == expected
