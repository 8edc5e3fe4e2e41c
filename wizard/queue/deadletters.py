"""Dead letters: the admin's two actions on a task that used up its attempts.

Reading the dead-letter queue is in :mod:`wizard.queue.reading`.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import store
from .scripts import Scripts


@dataclass(frozen=True)
class _TaskIdArgs:
    """ARGV of ``redrive.lua`` and ``discard.lua``."""

    task_id: str


def redrive_dead_letter(scripts: Scripts, task_id: str) -> bool:
    """Put a dead-lettered task back in the queue with its attempts reset.
    Returns False if ``task_id`` is not in the dead-letter queue."""
    keys = [store.DEAD_LETTER_QUEUE, store.task_key(task_id), store.TASK_QUEUE]
    return scripts.redrive(keys=keys, args=_TaskIdArgs(task_id)) == 1


def delete_dead_letter(scripts: Scripts, task_id: str) -> bool:
    """Remove a task from the dead-letter queue and delete it, atomically.
    Returns False if ``task_id`` is not in the dead-letter queue."""
    keys = [store.DEAD_LETTER_QUEUE, store.task_key(task_id)]
    return scripts.discard(keys=keys, args=_TaskIdArgs(task_id)) == 1
