"""The Prometheus scrape configurations of docs/metrics.md: each has the
shape Prometheus reads (a JSON Schema of the parts they use), and relies only
on names, ports and labels that exist in the deployment it is for. The
local one is followed for real: each node's metrics path through the
gateway, parsed with the official parser."""

from __future__ import annotations

import re

import jsonschema
import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.ops.conftest import OPS, ROOT

DOC = ROOT / "docs" / "metrics.md"

_RELABEL = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "source_labels": {"type": "array", "items": {"type": "string"}},
        "target_label": {"type": "string"},
        "replacement": {"type": "string"},
        "regex": {"type": "string"},
        "action": {"enum": ["replace", "keep", "drop", "labelmap", "labeldrop", "labelkeep"]},
    },
}

#: The parts of Prometheus's configuration file that the docs use, as in
#: https://prometheus.io/docs/prometheus/latest/configuration/configuration/
SCHEMA = {
    "type": "object",
    "required": ["scrape_configs"],
    "additionalProperties": False,
    "properties": {
        "scrape_configs": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["job_name"],
                "additionalProperties": False,
                "properties": {
                    "job_name": {"type": "string"},
                    "scrape_interval": {"type": "string", "pattern": r"^\d+(ms|s|m|h)$"},
                    "metrics_path": {"type": "string", "pattern": "^/"},
                    "static_configs": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["targets"],
                            "additionalProperties": False,
                            "properties": {"targets": {"type": "array"}},
                        },
                    },
                    "dns_sd_configs": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["names"],
                            "additionalProperties": False,
                            "properties": {
                                "names": {"type": "array", "items": {"type": "string"}},
                                "type": {"enum": ["SRV", "A", "AAAA", "MX", "NS"]},
                                "port": {"type": "integer"},
                                "refresh_interval": {"type": "string"},
                            },
                        },
                    },
                    "kubernetes_sd_configs": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["role"],
                            "additionalProperties": False,
                            "properties": {
                                "role": {
                                    "enum": [
                                        "node",
                                        "pod",
                                        "service",
                                        "endpoints",
                                        "endpointslice",
                                        "ingress",
                                    ]
                                },
                                "namespaces": {
                                    "type": "object",
                                    "properties": {"names": {"type": "array"}},
                                },
                            },
                        },
                    },
                    "relabel_configs": {"type": "array", "items": _RELABEL},
                },
            },
        }
    },
}


def configs() -> dict[str, dict]:
    """The YAML blocks of docs/metrics.md, by job name."""
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    found = {}
    for block in blocks:
        config = yaml.safe_load(block)
        jsonschema.validate(config, SCHEMA)
        [job] = config["scrape_configs"]
        found[job["job_name"]] = job
    return found


def test_the_docs_give_a_valid_configuration_for_each_deployment():
    assert sorted(configs()) == ["wizard-compose", "wizard-k8s", "wizard-local"]


def test_the_schema_refuses_a_misspelt_key():
    broken = {"scrape_configs": [{"job_name": "x", "static_config": [{"targets": []}]}]}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, SCHEMA)


def test_the_compose_configuration_finds_the_app_replicas_on_their_port():
    [dns] = configs()["wizard-compose"]["dns_sd_configs"]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    [name] = dns["names"]
    assert name in compose["services"]
    environment = compose["services"][name].get("environment", {})
    assert dns["port"] == int(environment.get("WIZARD_PORT", 8000))


def test_the_kubernetes_configuration_keeps_exactly_the_app_pods_on_their_http_port():
    job = configs()["wizard-k8s"]
    deployment = yaml.safe_load((OPS / "k8s" / "app-deployment.yaml").read_text())
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert job["kubernetes_sd_configs"][0]["namespaces"]["names"] == [
        deployment["metadata"]["namespace"]
    ]
    keeps = {r["source_labels"][0]: r["regex"] for r in job["relabel_configs"] if r.get("action")}
    component = "__meta_kubernetes_pod_label_app_kubernetes_io_component"
    assert keeps[component] == labels["app.kubernetes.io/component"]
    port_names = {p["name"] for p in container["ports"]}
    assert keeps["__meta_kubernetes_pod_container_port_name"] in port_names


def relabel(job: dict, target: str) -> dict[str, str]:
    """Prometheus's relabelling of one static target (replace actions with
    the default regex ``(.*)``), enough for the local configuration."""
    labels = {"__address__": target, "__metrics_path__": "/metrics"}
    for rule in job["relabel_configs"]:
        source = ";".join(labels.get(name, "") for name in rule.get("source_labels", []))
        labels[rule["target_label"]] = rule.get("replacement", "$1").replace("$1", source)
    return labels


def test_the_local_configuration_reaches_each_node_alone_through_the_gateway(cluster):
    job = configs()["wizard-local"]
    [static] = job["static_configs"]
    assert static["targets"] == list(cluster.node_ports)
    for node in static["targets"]:
        labels = relabel(job, node)
        assert labels["__address__"] == "127.0.0.1:8080" and labels["instance"] == node
        url = f"{cluster.url}{labels['__metrics_path__']}"
        for _ in range(len(static["targets"]) + 1):  # more scrapes than nodes
            response = requests.get(url, timeout=10)
            assert response.status_code == 200
            families = list(text_string_to_metric_families(response.text))
            samples = [sample for family in families for sample in family.samples]
            assert samples and {s.labels["node"] for s in samples} == {node}
