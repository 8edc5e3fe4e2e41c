"""One problem type per meaning, whoever answers: every ``type`` the gateway
writes (ops/nginx/*.conf and the Kubernetes copy) against the types the
nodes write (wizard/router.py's errors, and waitress's parse errors through
wizard/server.py), and each listed in the README and the OpenAPI document."""

from __future__ import annotations

import json
import re
from http import HTTPStatus
from pathlib import Path

import yaml

from wizard import router
from wizard.server import problem_body

ROOT = Path(__file__).resolve().parents[2]
#: ``return 503 '{"type":"https://.../problems/<name>"`` in a gateway config.
GATEWAY_PROBLEM = re.compile(
    r"return (\d{3}) '\{\"type\":\"" + re.escape(router.PROBLEM_BASE) + r"([a-z-]+)\""
)
#: The statuses waitress may answer itself (waitress.utilities.Error's subclasses).
WAITRESS_STATUSES = (400, 413, 431, 500, 501)


def gateway_types() -> dict[str, set[tuple[int, str]]]:
    """(status, type name) pairs of each gateway configuration, by file."""
    found = {}
    for path in sorted((ROOT / "ops" / "nginx").glob("*.conf")):
        found[path.name] = set(GATEWAY_PROBLEM.findall(path.read_text()))
    configmap = yaml.safe_load((ROOT / "ops" / "k8s" / "gateway-configmap.yaml").read_text())
    for name, text in configmap["data"].items():
        found[f"k8s {name}"] = set(GATEWAY_PROBLEM.findall(text))
    return {name: {(int(s), t) for s, t in pairs} for name, pairs in found.items() if pairs}


def node_types() -> set[tuple[int, str]]:
    """(status, type name) of every problem a node may write."""
    found = set()
    errors = [router.HTTPError]
    while errors:
        error = errors.pop()
        found.add((error.status, error.slug))
        errors.extend(error.__subclasses__())
    for status in WAITRESS_STATUSES:
        body = json.loads(problem_body(status, HTTPStatus(status).phrase, "x", "node-1"))
        found.add((status, body["type"].removeprefix(router.PROBLEM_BASE)))
    return found


def test_the_gateway_and_the_nodes_use_one_type_per_status_they_share():
    nodes = node_types()
    node_by_status: dict[int, set[str]] = {}
    for status, name in nodes:
        node_by_status.setdefault(status, set()).add(name)
    for config, pairs in gateway_types().items():
        for status, name in pairs:
            if status in node_by_status:
                assert name in node_by_status[status], (config, status, name, node_by_status)


def test_no_type_names_two_statuses():
    everything = node_types().union(*gateway_types().values())
    statuses: dict[str, set[int]] = {}
    for status, name in everything:
        statuses.setdefault(name, set()).add(status)
    assert {name: s for name, s in statuses.items() if len(s) > 1} == {}


def test_every_type_is_documented_in_the_readme_and_the_openapi_document():
    readme = (ROOT / "README.md").read_text()
    openapi = json.loads((ROOT / "wizard" / "openapi.json").read_text())
    described = openapi["components"]["schemas"]["ProblemDetails"]["properties"]["type"]
    names = {name for _, name in node_types().union(*gateway_types().values())}
    assert len(names) > 15
    for name in sorted(names):
        assert f"| `{name}` |" in readme, name
        assert f"`{name}`" in described["description"], name


def test_the_gateway_503_is_the_nodes_503():
    assert (503, "service-unavailable") in gateway_types()["wizard-locations.conf"]
    assert (503, "service-unavailable") in node_types()
