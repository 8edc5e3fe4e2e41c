"""Logs: one JSON object per line on stdout, from every process.

Every line carries the same fields, so one ``grep <task id>`` follows a task
from the node that accepted it to the worker that ran it::

    {"time": "2026-11-29T13:40:00.123Z", "level": "info", "event": "task complete",
     "node": "node-2", "process": "node-2/w1", "task_id": "3f2a...", "duration_ms": 2.1}

Callers pass the structured fields with ``extra``::

    log.info("task complete", extra={"task_id": task_id, "duration_ms": 2.1})
"""

from __future__ import annotations

import json
import logging
import sys
import time

#: Fields copied from ``extra`` into each line, when present.
FIELDS = (
    "request_id",
    "task_id",
    "method",
    "path",
    "status",
    "duration_ms",
    "attempt",
    "reason",
    "pid",
    "previous_pid",
    "exit_code",
    "delay_seconds",
    "error",
    "url",
    "identity",
    "kind",
    "crashed_thread",
    "traceback",
)


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object: time (UTC, ISO 8601, ms), level,
    event (the message), node, process (its role: ``api``, ``<node>/w1``...),
    the FIELDS given in ``extra``, and the traceback when there is one."""

    def __init__(self, node: str, process: str) -> None:
        super().__init__()
        self.node = node
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line = {
            "time": f"{stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "event": record.getMessage(),
            "node": self.node,
            "process": self.process,
        }
        for name in FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["traceback"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure(level: str, *, node: str, process: str) -> None:
    """Send this process's logs to stdout as JSON lines at ``level``
    (``debug``, ``info``, ``warning``, ``error``). Call once per process."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(node, process))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
