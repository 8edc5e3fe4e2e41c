"""The task record: its states, the hash it is stored as, and a claim on it.

A task lives in the hash ``task:<id>`` (see :mod:`wizard.store`). Its
``status`` field moves through :class:`TaskStatus`; :class:`Task` is that
hash decoded, and :class:`Claim` is what a worker holds while it runs one.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from enum import Enum

from ..operations import Number


class TaskStatus(str, Enum):
    """Where a task is in its life. Stored as the ``status`` field."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETE = "complete"
    FAILED = "failed"


@dataclass(frozen=True)
class Task:
    """One task as stored in ``task:<id>``, decoded.

    ``a``, ``b`` and ``result`` keep their JSON kind (int or float).
    Times are Unix seconds (float) or None when the step has not happened.
    """

    task_id: str
    operation: str
    a: Number
    b: Number
    status: TaskStatus
    accepted_by: str
    handled_by: str | None
    attempts: int
    created_at: float
    started_at: float | None
    finished_at: float | None
    result: Number | None = None
    error: str | None = None
    reason: str | None = None

    @classmethod
    def from_hash(cls, task_id: str, fields: dict[str, str]) -> Task:
        """Decode the hash read with HGETALL (strings) into a Task."""

        def number(name: str) -> Number | None:
            raw = fields.get(name)
            return None if raw in (None, "") else json.loads(raw)

        def seconds(name: str) -> float | None:
            raw = fields.get(name)
            return None if raw in (None, "") else float(raw)

        return cls(
            task_id=task_id,
            operation=fields["operation"],
            a=number("a"),
            b=number("b"),
            status=TaskStatus(fields["status"]),
            accepted_by=fields.get("accepted_by", ""),
            handled_by=fields.get("handled_by") or None,
            attempts=int(fields.get("attempts", 0)),
            created_at=float(fields["created_at"]),
            started_at=seconds("started_at"),
            finished_at=seconds("finished_at"),
            result=number("result"),
            error=fields.get("error") or None,
            reason=fields.get("reason") or None,
        )

    def to_json(self) -> dict:
        """The task as the API shows it (no lease internals)."""
        body = {
            "task_id": self.task_id,
            "status": self.status.value,
            "operation": self.operation,
            "a": self.a,
            "b": self.b,
            "accepted_by": self.accepted_by,
            "handled_by": self.handled_by,
            "attempts": self.attempts,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }
        if self.status is TaskStatus.COMPLETE:
            body["result"] = self.result
        if self.error is not None:
            body["error"] = self.error
        if self.reason is not None:
            body["reason"] = self.reason
        if self.finished_at is not None:
            body["duration_ms"] = round((self.finished_at - self.created_at) * 1000, 3)
        return body


@dataclass(frozen=True)
class Claim:
    """A task a worker has taken and holds the lease on.

    ``attempt`` is the fencing token: the ``attempts`` value this claim set.
    """

    task_id: str
    worker_id: str
    attempt: int
    operation: str
    a: Number
    b: Number


def new_task_id() -> str:
    """A fresh task id: 32 lowercase hex digits (a random UUID4)."""
    return uuid.uuid4().hex


def is_task_id(text: str) -> bool:
    """True if ``text`` has the shape of a task id (32 hex digits)."""
    return len(text) == 32 and all(c in "0123456789abcdef" for c in text)
