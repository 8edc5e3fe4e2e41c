"""The script runner: every Lua script of the project runs through here.

Each script is a ``.lua`` file whose header names its keys and arguments,
one per line, in order::

    -- KEYS[1] task hash (task:<id>)
    -- ARGV[1] worker_id    the lease holder

:class:`Script` reads the file once, runs it with EVALSHA (Valkey keeps
scripts by their SHA-1, so only the 40-digit hash travels), and loads it
again when Valkey answers NOSCRIPT (after a restart or SCRIPT FLUSH). The
arguments are passed by name: a frozen dataclass, or a dict, whose fields
are the names of the header's ``ARGV`` lines. The runner puts them in the
header's order, so no caller counts positions::

    >>> renew = Script(client, LUA_DIR / "renew.lua")            # doctest: +SKIP
    >>> renew(keys=["task:ab12..."], args={"worker_id": "node-1/w1",
    ...       "attempt": 1, "lease_ms": 10000})                    # doctest: +SKIP
    1

Like valkey-py's own Script, minus its per-call isinstance check against a
typing Protocol, which costs more than the rest of the call.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from pathlib import Path

import valkey

#: Where the queue's own scripts are (``wizard/queue/*.lua``).
LUA_DIR = Path(__file__).resolve().parent

_ARGV_LINE = re.compile(r"^-- ARGV\[(\d+)\] (\w+)", re.MULTILINE)


class Script:
    """One Lua script file, run with EVALSHA and loaded again on NOSCRIPT.

    ``argv_names`` are the names of its ``ARGV`` header lines, in order.

    Raises (at construction):
        OSError: the file cannot be read.
        ValueError: the header numbers its ARGV lines out of order.
    """

    def __init__(self, client: valkey.Valkey, path: Path) -> None:
        self.client = client
        self.path = Path(path)
        self.source = self.path.read_text()
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()
        numbered = _ARGV_LINE.findall(self.source)
        if [int(n) for n, _ in numbered] != list(range(1, len(numbered) + 1)):
            raise ValueError(f"{self.path.name}: ARGV header lines must be numbered 1, 2, ...")
        self.argv_names = tuple(name for _, name in numbered)

    def argv(self, args) -> list:
        """The values of ``args`` (a dataclass or a dict) in ARGV order.

        Raises:
            KeyError, AttributeError: ``args`` lacks a name the header lists.
        """
        if isinstance(args, dict):
            return [args[name] for name in self.argv_names]
        if not dataclasses.is_dataclass(args):
            raise TypeError(f"{self.path.name}: pass the arguments as a dataclass or a dict")
        return [getattr(args, name) for name in self.argv_names]

    def queue(self, pipe: valkey.client.Pipeline, keys: list, args) -> None:
        """Add a run of this script to ``pipe`` (EVALSHA; a missing script
        comes back as a NoScriptError in the pipeline's results)."""
        pipe.evalsha(self.sha, len(keys), *keys, *self.argv(args))

    def __call__(self, keys: list, args):
        """Run the script now and return its reply.

        Raises:
            valkey.ConnectionError, valkey.TimeoutError: Valkey is unreachable.
        """
        argv = self.argv(args)
        try:
            return self.client.evalsha(self.sha, len(keys), *keys, *argv)
        except valkey.exceptions.NoScriptError:
            # Valkey restarted (or flushed its scripts): load it and go on.
            self.client.script_load(self.source)
            return self.client.evalsha(self.sha, len(keys), *keys, *argv)


class Scripts:
    """Every Lua script of the queue, bound to one client (files in
    :data:`LUA_DIR`, one :class:`Script` each)."""

    def __init__(self, client: valkey.Valkey) -> None:
        self.step = Script(client, LUA_DIR / "step.lua")
        self.renew = Script(client, LUA_DIR / "renew.lua")
        self.flush = Script(client, LUA_DIR / "flush.lua")
        self.release = Script(client, LUA_DIR / "release.lua")
        self.retry = Script(client, LUA_DIR / "retry.lua")
        self.promote = Script(client, LUA_DIR / "promote.lua")
        self.redrive = Script(client, LUA_DIR / "redrive.lua")
        self.discard = Script(client, LUA_DIR / "discard.lua")
        self.unclaim = Script(client, LUA_DIR / "unclaim.lua")
