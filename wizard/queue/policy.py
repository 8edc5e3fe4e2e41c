"""The retry policy: how often a task is tried, how long between tries, and
how long its record is kept once it ends."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config import Settings

#: How long a dead letter stays readable, seconds (7 days).
DEAD_LETTER_TTL = 7 * 86400
#: Longest retry delay, seconds, however many attempts came before.
MAX_BACKOFF_SECONDS = 30.0


@dataclass(frozen=True)
class RetryPolicy:
    """What a worker and the reaper need to hand a task back.

    ``max_attempts``: attempts before dead-lettering; ``base_backoff_seconds``:
    the first retry's delay ceiling, doubled per attempt up to
    ``max_backoff_seconds``; ``dead_letter_ttl_seconds``: how long a dead
    letter stays readable; ``result_ttl_seconds``: how long a finished task
    stays readable.
    """

    max_attempts: int
    base_backoff_seconds: float
    result_ttl_seconds: int
    max_backoff_seconds: float = MAX_BACKOFF_SECONDS
    dead_letter_ttl_seconds: int = DEAD_LETTER_TTL

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        """The policy of a node (``WIZARD_MAX_ATTEMPTS``,
        ``WIZARD_RETRY_BASE_SECONDS``, ``WIZARD_RESULT_TTL``)."""
        return cls(
            max_attempts=settings.max_attempts,
            base_backoff_seconds=settings.retry_base_seconds,
            result_ttl_seconds=settings.result_ttl,
        )

    def backoff_seconds(self, attempts: int) -> float:
        """Delay before retry number ``attempts`` (1, 2, ...), seconds:
        exponential with "equal jitter" (half fixed, half random), capped at
        ``max_backoff_seconds``, as in the AWS Architecture Blog,
        "Exponential Backoff And Jitter" (2015)."""
        growth = self.base_backoff_seconds * 2 ** max(attempts - 1, 0)
        ceiling = min(self.max_backoff_seconds, growth)
        return ceiling / 2 + random.uniform(0, ceiling / 2)
