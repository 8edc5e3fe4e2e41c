"""The network-lab scripts (ops/scripts/lab/*.sh) are strict bash that
shellcheck accepts, each described in the lab's README. They need root and
a running lab; the scenarios they walk through run as tests, with counts,
in tests/netlab/."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.ops.conftest import OPS
from tests.ops.test_scripts import SHELLCHECK

LAB_SCRIPTS = sorted((OPS / "scripts" / "lab").glob("*.sh"))


def test_there_are_three_lab_scripts_each_described_in_the_readme():
    readme = (OPS / "scripts" / "lab" / "README.md").read_text()
    assert [p.name[:3] for p in LAB_SCRIPTS] == ["01-", "02-", "03-"]
    for path in LAB_SCRIPTS:
        assert f"`{path.name}`" in readme, path.name


@pytest.mark.parametrize("path", LAB_SCRIPTS, ids=lambda p: p.name)
def test_each_lab_script_is_strict_bash_aimed_at_the_lab_by_default(path):
    text = path.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "\nset -euo pipefail\n" in text
    assert 'BASE_URL="${BASE_URL:-http://198.18.42.2}"' in text
    assert os.access(path, os.X_OK)


def test_shellcheck_finds_nothing_in_the_lab_scripts():
    result = subprocess.run(
        [SHELLCHECK, *map(str, LAB_SCRIPTS)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
