"""Queue: the task record and every step of its life on Valkey.

Producers and consumers meet only here. A task moves through these states::

    pending ──take──► running ──finish──► complete | failed
       ▲                 │
       └──── retry ◄─────┘   (worker lost, timed out, Valkey hiccup; with backoff)

One module per step, each small enough to read in one sitting:

- :mod:`.task`: the record (``task:<id>``), its states, a worker's claim;
- :mod:`.producing`: :func:`submit` (and :func:`submit_once`, idempotent);
- :mod:`.reading`: status, recent tasks, counts, dead letters (never writes);
- :mod:`.consuming`: :func:`step` (record outcomes and take the next tasks
  in one round trip), :func:`take`, :func:`renew`, :func:`finish`, :func:`retry`;
- :mod:`.recovery`: the reaper's tools (find_lost, requeue, promote_due);
- :mod:`.deadletters`: redrive or delete a dead letter;
- :mod:`.policy`: the :class:`RetryPolicy` (attempts, backoff, TTLs);
- :mod:`.scripts`: the runner of the Lua scripts, which are files here
  (``step.lua``, ``retry.lua``, ...) whose headers name their KEYS and ARGV.

    >>> task_id = submit(client, "add", 1, 2, accepted_by="node-1")   # doctest: +SKIP
    >>> claim = take(client, scripts, "node-1/w1",
    ...              lease_ms=10_000, block_seconds=1)                # doctest: +SKIP
    >>> finish(client, scripts, claim, node_id="node-1", result_ttl=60,
    ...        result=3)                                          # doctest: +SKIP
    True

Timestamps are Unix seconds: ``created_at`` and ``finished_at`` from the
clock of the node that wrote them, ``started_at`` from Valkey's clock at the
claim. Lease expiry is compared with Valkey's own clock (``TIME``) inside the
scripts, so nodes with skewed clocks still agree on who holds a lease.
"""

from __future__ import annotations

from ..operations import Number
from .consuming import (
    HandBack,
    Outcome,
    RetryOutcome,
    Step,
    Taking,
    finish,
    release,
    renew,
    retry,
    step,
    take,
)
from .deadletters import delete_dead_letter, redrive_dead_letter
from .policy import DEAD_LETTER_TTL, MAX_BACKOFF_SECONDS, RetryPolicy
from .producing import (
    ACK_TIMEOUT_MS,
    IDEMPOTENCY_TTL,
    KeyReused,
    NotDurable,
    submit,
    submit_once,
)
from .reading import counts, dead_letters, processing_workers, read_tasks, recent, status
from .recovery import Lost, drop_from_processing, find_lost, promote_due, requeue_unclaimed, trim
from .scripts import LUA_DIR, Script, Scripts
from .task import Claim, Task, TaskStatus, is_task_id, new_task_id

__all__ = [
    "ACK_TIMEOUT_MS",
    "DEAD_LETTER_TTL",
    "IDEMPOTENCY_TTL",
    "LUA_DIR",
    "MAX_BACKOFF_SECONDS",
    "Claim",
    "HandBack",
    "KeyReused",
    "Lost",
    "NotDurable",
    "Number",
    "Outcome",
    "RetryOutcome",
    "RetryPolicy",
    "Script",
    "Scripts",
    "Step",
    "Taking",
    "Task",
    "TaskStatus",
    "counts",
    "dead_letters",
    "delete_dead_letter",
    "drop_from_processing",
    "find_lost",
    "finish",
    "is_task_id",
    "new_task_id",
    "processing_workers",
    "promote_due",
    "read_tasks",
    "recent",
    "redrive_dead_letter",
    "release",
    "renew",
    "requeue_unclaimed",
    "retry",
    "status",
    "step",
    "submit",
    "submit_once",
    "take",
    "trim",
]
