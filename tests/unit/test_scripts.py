"""The Lua files and their runner, without a server: every script names its
KEYS and ARGV in its header, the runner passes exactly those names, and an
install (setup.cfg's package_data) ships every file."""

from __future__ import annotations

import configparser
import dataclasses
import fnmatch
import re

import pytest

from tests.unit.test_layout import PACKAGE
from wizard import metrics
from wizard.queue import consuming, deadletters, recovery
from wizard.queue.scripts import LUA_DIR, Script

LUA_FILES = sorted(PACKAGE.rglob("*.lua"))

#: The dataclass each queue script's ARGV is built from.
ARGUMENTS = {
    "step.lua": consuming._StepArgs,
    "renew.lua": consuming._RenewArgs,
    "flush.lua": metrics._FlushArgs,
    "release.lua": consuming._ReleaseArgs,
    "retry.lua": consuming._RetryArgs,
    "unclaim.lua": recovery._UnclaimArgs,
    "promote.lua": recovery._PromoteArgs,
    "redrive.lua": deadletters._TaskIdArgs,
    "discard.lua": deadletters._TaskIdArgs,
}


@pytest.mark.parametrize("path", LUA_FILES, ids=lambda p: p.name)
def test_each_script_names_its_keys_and_argv_and_uses_no_bare_argv(path):
    script = Script(None, path)
    body = [line for line in script.source.splitlines() if not line.startswith("--")]
    uses = {int(n) for n in re.findall(r"ARGV\[(\d+)\]", "\n".join(body))}
    assert uses == set(range(1, len(script.argv_names) + 1))
    keys = {int(n) for n in re.findall(r"KEYS\[(\d+)\]", "\n".join(body))}
    named = {int(n) for n in re.findall(r"^-- KEYS\[(\d+)\]", script.source, re.MULTILINE)}
    assert keys <= named and named


def test_every_queue_script_gets_its_arguments_by_name():
    assert sorted(ARGUMENTS) == sorted(p.name for p in LUA_DIR.glob("*.lua"))
    for name, arguments in ARGUMENTS.items():
        fields = tuple(f.name for f in dataclasses.fields(arguments))
        assert Script(None, LUA_DIR / name).argv_names == fields, name


def test_the_runner_orders_arguments_by_the_header_not_by_the_caller():
    script = Script(None, LUA_DIR / "renew.lua")
    given = {"lease_ms": 3000, "worker_id": "node-1/w1", "attempt": 2}
    assert script.argv(given) == ["node-1/w1", 2, 3000]
    with pytest.raises(KeyError):
        script.argv({"worker_id": "node-1/w1"})


def test_an_install_ships_every_lua_file():
    setup = configparser.ConfigParser()
    setup.read(PACKAGE.parent / "setup.cfg")
    patterns = {
        package: [p.strip() for p in globs.split(",")]
        for package, globs in setup["options.package_data"].items()
    }
    packages = [p.strip() for p in setup["options"]["packages"].split(",")]
    for path in LUA_FILES:
        package = ".".join(path.parent.relative_to(PACKAGE.parent).parts)
        assert package in packages, path
        assert any(fnmatch.fnmatch(path.name, g) for g in patterns.get(package, [])), path
