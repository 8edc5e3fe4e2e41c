"""Logs: one JSON object per line, the same fields from every process."""

from __future__ import annotations

import json
import logging
import re
import sys

import pytest

from wizard import logs

TIME_FORMAT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def record(message: str, level: int = logging.INFO, exc_info=None, **extra) -> logging.LogRecord:
    logger = logging.getLogger("wizard.test")
    return logger.makeRecord("wizard.test", level, __file__, 1, message, (), exc_info, extra=extra)


def formatted(made: logging.LogRecord) -> dict:
    line = logs.JsonFormatter(node="node-2", process="node-2/w1").format(made)
    assert "\n" not in line
    return json.loads(line)


def test_a_log_line_is_one_json_object_with_time_level_event_node_and_process():
    line = formatted(record("task complete"))
    assert set(line) == {"time", "level", "event", "node", "process"}
    assert TIME_FORMAT.match(line["time"]), line["time"]
    assert line["level"] == "info"
    assert line["event"] == "task complete"
    assert line["node"] == "node-2"
    assert line["process"] == "node-2/w1"


def test_the_time_is_utc_with_milliseconds():
    made = record("tick")
    made.created, made.msecs = 0.042, 42.0
    assert formatted(made)["time"] == "1970-01-01T00:00:00.042Z"


def test_structured_fields_given_in_extra_are_copied_into_the_line():
    line = formatted(record("task complete", task_id="3f2a", duration_ms=2.5, attempt=1))
    assert line["task_id"] == "3f2a"
    assert line["duration_ms"] == 2.5
    assert line["attempt"] == 1


def test_fields_not_in_the_list_and_fields_set_to_none_are_left_out():
    line = formatted(record("request", secret="do-not-log", task_id=None))
    assert "secret" not in line
    assert "task_id" not in line


def test_a_value_json_cannot_encode_is_written_as_text():
    line = formatted(record("odd", error=ValueError("bad value")))
    assert line["error"] == "bad value"


def test_the_level_is_lowercase():
    assert formatted(record("careful", level=logging.WARNING))["level"] == "warning"


def test_an_exception_keeps_its_traceback_inside_the_one_line():
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        # Capture the exception the way log.exception() does.
        made = record("unhandled error", level=logging.ERROR, exc_info=sys.exc_info())
    line = formatted(made)
    assert "Traceback" in line["traceback"]
    assert "RuntimeError: boom" in line["traceback"]


def test_a_message_with_newlines_and_quotes_stays_on_one_line():
    line = formatted(record('he said "stop"\nand left'))
    assert line["event"] == 'he said "stop"\nand left'


@pytest.fixture
def restore_root_logger():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)


def test_configure_sends_json_lines_to_stdout_at_the_chosen_level(restore_root_logger, capsys):
    logs.configure("warning", node="node-1", process="api")
    logging.getLogger("wizard.api").info("not shown")
    logging.getLogger("wizard.api").warning("shown", extra={"reason": "test"})
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    line = json.loads(lines[0])
    assert line["event"] == "shown"
    assert line["process"] == "api"
    assert line["reason"] == "test"
