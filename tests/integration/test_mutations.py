"""Mutation check of the Lua scripts' guards: remove one guard, and some
test must fail.

Each mutant below rewrites one condition of one script so that it always
lets the write through (or, for an "is it there?" check, never notices).
The runner (:class:`wizard.queue.scripts.Script`) is patched to load the
mutated source instead of the file, and the tests of the fences, the queue,
the scheduler and the rate limit are called with it, on a real Valkey; the
first failing one kills the mutant. A mutant no test kills is a guard whose
promise nothing proves, and fails this test.

The lease-*expiry* guard is retry.lua's (for the reaper); the reaper's
first look at ``lease_expires`` is in Python (``queue.find_lost``), covered
by the scheduler's tests.
"""

from __future__ import annotations

import hashlib
import inspect
from dataclasses import dataclass

import pytest
import valkey

from tests.integration import test_fences, test_queue, test_rate_limit, test_scheduler, test_step
from wizard import queue
from wizard.queue import scripts as runner

#: The tests the mutants run against, in order (the fences first: fastest
#: to kill). Only functions whose fixtures are ``client``, ``scripts`` or
#: ``settings``, and that are not parametrized.
SUITES = (test_fences, test_queue, test_step, test_scheduler, test_rate_limit)


@dataclass(frozen=True)
class Mutant:
    """``script`` with ``original`` (found exactly once) replaced."""

    script: str
    guard: str
    original: str
    replacement: str


MUTANTS = [
    # step.lua, recording: the fence, and the "my own repeated write" shortcut.
    Mutant("step.lua", "status", "f[1] ~= 'running' or f[2]", "false or f[2]"),
    Mutant("step.lua", "owner", "or f[2] ~= worker_id or", "or false or"),
    Mutant("step.lua", "attempt", "or f[3] ~= attempt then", "or false then"),
    Mutant("step.lua", "repeat: status", "if f[1] == status and", "if true and"),
    Mutant("step.lua", "repeat: holder", "and f[4] == worker_id and", "and true and"),
    Mutant("step.lua", "repeat: attempt", "and f[3] == attempt then\n    -- Our own",
           "and true then\n    -- Our own"),
    # renew.lua
    Mutant("renew.lua", "status", "f[1] ~= 'running' or", "false or"),
    Mutant("renew.lua", "owner", "or f[2] ~= worker_id or", "or false or"),
    Mutant("renew.lua", "attempt", "or f[3] ~= attempt then", "or false then"),
    # retry.lua
    Mutant("retry.lua", "status", "f[1] ~= 'running' or", "false or"),
    Mutant("retry.lua", "owner", "or f[2] ~= worker_id or", "or false or"),
    Mutant("retry.lua", "attempt", "or f[3] ~= attempt then", "or false then"),
    Mutant("retry.lua", "task gone", "if not f[1] then", "if false then"),
    Mutant("retry.lua", "attempts used up", "- outages >= max_attempts then", "- 0 > 1e9 then"),
    Mutant("retry.lua", "outages not counted", "if count_attempt == '0' then",
           "if false then"),
    Mutant("retry.lua", "lease expiry", "if tonumber(f[5]) >= now_ms then", "if false then"),
    Mutant("retry.lua", "reaper only", "if only_if_expired == '1' and f[5] then",
           "if f[5] then"),
    # step.lua, claiming: only a pending task is claimed; an ended one leaves the list.
    Mutant("step.lua", "status pending", "if f[1] == 'pending' then", "if true then"),
    Mutant("step.lua", "ended leaves the list", "elseif f[1] ~= 'running' then",
           "elseif false then"),
    # release.lua: only the lease holder's own attempt of a running task.
    Mutant("release.lua", "status", "if f[1] == 'running' and", "if true and"),
    Mutant("release.lua", "owner", "and f[2] == worker_id and", "and true and"),
    Mutant("release.lua", "attempt", "and f[3] == attempt then", "and true then"),
    # unclaim.lua: never requeue a claimed task, nor an id not in the list.
    Mutant("unclaim.lua", "status running", "if status == 'running' then", "if false then"),
    Mutant("unclaim.lua", "in the list", "if redis.call('LREM', KEYS[1], 1, task_id) == 0 then",
           "if redis.call('LREM', KEYS[1], 1, task_id) == -1 then"),
    Mutant("unclaim.lua", "status pending", "if status == 'pending' then", "if true then"),
    # promote.lua: only retries whose delay has passed.
    Mutant("promote.lua", "due", "'-inf', now,", "'-inf', '+inf',"),
    # redrive.lua / discard.lua: only ids in the dead-letter queue.
    Mutant("redrive.lua", "in the dead-letter queue", "task_id) == 0 then", "task_id) == -1 then"),
    Mutant("redrive.lua", "task exists", "if redis.call('EXISTS', KEYS[2]) == 0 then",
           "if false then"),
    Mutant("discard.lua", "in the dead-letter queue", "task_id) == 0 then", "task_id) == -1 then"),
    # scheduler_lock.lua: only the holder extends the lock.
    Mutant("scheduler_lock.lua", "owner", "if redis.call('GET', KEYS[1]) == owner then",
           "if true then"),
    # flush.lua: a batch resent after a lost reply is not added twice.
    Mutant("flush.lua", "token applied", "if redis.call('GET', KEYS[3]) == ARGV[4] then",
           "if false then"),
    # ratelimit.lua: a request before its allowed time waits.
    Mutant("ratelimit.lua", "too early", "if now < allowed_at then", "if false then"),
]  # fmt: skip


def checks() -> list:
    """The test functions the mutants run against."""
    found = []
    for suite in SUITES:
        for name, function in inspect.getmembers(suite, inspect.isfunction):
            if not name.startswith("test_") or function.__module__ != suite.__name__:
                continue
            if hasattr(function, "pytestmark"):
                continue
            if set(inspect.signature(function).parameters) <= {"client", "scripts", "settings"}:
                found.append(function)
    return found


def source_of(name: str) -> str:
    paths = [p for p in queue.LUA_DIR.parent.parent.rglob(name)]
    assert len(paths) == 1, f"{name}: found {paths}"
    return paths[0].read_text()


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: f"{m.script}:{m.guard}")
def test_removing_a_guard_makes_some_test_fail(mutant, valkey_server, settings, monkeypatch):
    original = source_of(mutant.script)
    assert original.count(mutant.original) == 1, f"the guard moved in {mutant.script}"
    mutated = original.replace(mutant.original, mutant.replacement)
    real_init = runner.Script.__init__

    def load_mutant(self, client, path):
        real_init(self, client, path)
        if self.path.name == mutant.script:
            self.source = mutated
            self.sha = hashlib.sha1(mutated.encode()).hexdigest()

    monkeypatch.setattr(runner.Script, "__init__", load_mutant)
    killed_by = None
    for check in checks():
        client = valkey.Valkey.from_url(valkey_server.url, decode_responses=True)
        client.flushall()
        fixtures = {"client": client, "scripts": queue.Scripts(client), "settings": settings}
        wanted = inspect.signature(check).parameters
        try:
            check(**{name: fixtures[name] for name in wanted})
        except (AssertionError, valkey.ValkeyError, TypeError, ValueError, KeyError) as failure:
            # The mutant changed an outcome some test checks: killed.
            killed_by = f"{check.__module__}.{check.__name__}: {type(failure).__name__}"
            break
        finally:
            client.close()
    assert killed_by is not None, (
        f"no test notices {mutant.script} without its {mutant.guard} guard"
    )
