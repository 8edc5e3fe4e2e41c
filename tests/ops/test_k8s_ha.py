"""The Kubernetes HA variant (ops/k8s/ha/: the base minus its single Valkey,
plus Valkey with replicas and Sentinel), checked without a cluster: the
overlay is applied here the way kustomize would (deletions, then the app's
env merged by name), and the result is held to the same schemas and the
same promises between objects as the base, plus those of the HA layout."""

from __future__ import annotations

import copy
import subprocess

import kubernetes_validate
import pytest
import yaml

from tests.ops.test_k8s import KUBERNETES_VERSIONS, NAMESPACE, by_kind, manifest_paths, workload
from tests.ops.test_scripts import SHELLCHECK
from wizard.config import DurableAck, Settings

HA = manifest_paths()[0].parent / "ha"
KUSTOMIZATION = yaml.safe_load((HA / "kustomization.yaml").read_text())


def load(name: str) -> dict:
    return yaml.safe_load((HA / name).read_text())


@pytest.fixture(scope="module")
def built() -> dict[str, dict]:
    """The objects ``kubectl apply -k ops/k8s/ha`` would create, by name
    (``kind/name``): the base, the patches applied, the HA objects added."""
    objects = {}
    for path in manifest_paths():
        obj = yaml.safe_load(path.read_text())
        objects[f"{obj['kind']}/{obj['metadata']['name']}"] = obj
    for patch in KUSTOMIZATION["patches"]:
        change = load(patch["path"])
        key = f"{change['kind']}/{change['metadata']['name']}"
        assert key in objects, f"{patch['path']} patches {key}, which the base does not have"
        if change.get("$patch") == "delete":
            del objects[key]
            continue
        objects[key] = merge_env(objects[key], change)
    for name in KUSTOMIZATION["resources"][1:]:
        obj = load(name)
        objects[f"{obj['kind']}/{obj['metadata']['name']}"] = obj
    return objects


def merge_env(target: dict, patch: dict) -> dict:
    """Strategic merge of containers' env lists, by container and by name."""
    merged = copy.deepcopy(target)
    containers = {c["name"]: c for c in merged["spec"]["template"]["spec"]["containers"]}
    for change in patch["spec"]["template"]["spec"]["containers"]:
        env = {e["name"]: e for e in containers[change["name"]]["env"]}
        env.update({e["name"]: e for e in change["env"]})
        containers[change["name"]]["env"] = list(env.values())
    return merged


def app_env(built) -> dict[str, str]:
    (container,) = built["Deployment/app"]["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def test_the_kustomization_builds_on_the_base_and_lists_every_ha_file_once():
    listed = KUSTOMIZATION["resources"] + [p["path"] for p in KUSTOMIZATION["patches"]]
    assert listed[0] == "../"
    assert sorted(listed[1:]) == sorted(
        p.name for p in HA.glob("*.yaml") if p.stem != "kustomization"
    )


def test_the_single_valkey_is_replaced_by_the_ha_statefulset(built):
    assert "StatefulSet/valkey" not in built and "Service/valkey" not in built
    assert built["StatefulSet/valkey-ha"]["spec"]["replicas"] == 3
    assert "ConfigMap/valkey-config" in built, "the HA servers read the base's valkey.conf"


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_of_the_ha_variant_is_valid_against_the_kubernetes_schemas(built, version):
    for key, obj in built.items():
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            # Re-raised with the object's name: which one, which field.
            raise AssertionError(f"{key}: {error.message} at {list(error.path)}") from None


def test_every_object_lives_in_the_namespace_and_each_service_selects_one_workload(built):
    workloads = by_kind(built, "Deployment") + by_kind(built, "StatefulSet")
    for key, obj in built.items():
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == NAMESPACE, key
    for service in by_kind(built, "Service"):
        selector = service["spec"]["selector"]
        matches = [
            w
            for w in workloads
            if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(matches) == 1, service["metadata"]["name"]
        pods = workload(built, service["metadata"]["name"])
        names = {
            p["name"] for c in pods["spec"]["template"]["spec"]["containers"] for p in c["ports"]
        }
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= names


def test_the_nodes_ask_every_sentinel_by_its_pods_stable_name(built):
    statefulset = built["StatefulSet/valkey-ha"]
    service = built["Service/valkey-ha"]
    assert statefulset["spec"]["serviceName"] == service["metadata"]["name"]
    port = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "sentinel")
    pods = [f"valkey-ha-{n}.valkey-ha:{port}" for n in range(statefulset["spec"]["replicas"])]
    settings = Settings.from_env(app_env(built))
    assert list(settings.valkey_sentinels) == pods
    assert settings.durable_ack is DurableAck.REPLICA
    assert f"get-master-addr-by-name {settings.valkey_sentinel_master}" in start_script()


def test_each_pod_runs_a_server_and_a_sentinel_from_the_one_start_script(built):
    spec = built["StatefulSet/valkey-ha"]["spec"]["template"]["spec"]
    commands = {c["name"]: c["command"] for c in spec["containers"]}
    assert commands == {
        "valkey": ["sh", "/scripts/start.sh", "valkey"],
        "sentinel": ["sh", "/scripts/start.sh", "sentinel"],
    }
    script = start_script()
    assert "--min-replicas-to-write 1" in script, "an isolated primary must refuse writes"
    assert "sentinel monitor wizard $PRIMARY 6379 2" in script


def test_the_start_script_is_posix_sh_that_shellcheck_accepts(tmp_path):
    path = tmp_path / "start.sh"
    path.write_text(start_script())
    result = subprocess.run(
        [SHELLCHECK, "-s", "sh", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def start_script() -> str:
    return load("valkey-ha-scripts-configmap.yaml")["data"]["start.sh"]
