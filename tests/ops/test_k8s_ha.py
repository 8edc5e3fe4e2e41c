"""The Kubernetes HA overlay (ops/k8s/ha/: the base minus its single
Valkey, plus Valkey with replicas and Sentinel), checked without a cluster:
the overlay is applied here the way kustomize would (deletions, then the
app's env merged by name), and the result is held to every schema and
promise of the base that still applies (the checks of tests/ops/test_k8s.py,
run on the built objects) plus those of the HA layout: Secrets referenced,
never committed; the servers and sentinels started by the base's start.sh;
the network open only app -> Valkey/Sentinel and between the HA pods."""

from __future__ import annotations

import copy

import pytest
import yaml

from tests.ops import test_k8s as base
from wizard.config import DurableAck, Settings

HA = base.K8S / "ha"
KUSTOMIZATION = yaml.safe_load((HA / "kustomization.yaml").read_text())

#: The base's checks that hold for any variant (no file name or single
#: Valkey in them), run again on the overlay's objects.
BASE_CHECKS = [
    base.test_every_object_lives_in_the_math_wizard_namespace,
    base.test_each_workload_selects_the_pods_it_makes,
    base.test_each_service_selects_the_pods_of_exactly_one_workload,
    base.test_each_service_targets_a_port_its_pods_name,
    base.test_the_app_runs_three_replicas_of_the_compose_image,
    base.test_the_app_probes_ask_readyz_for_traffic_and_healthz_for_life,
    base.test_every_probe_path_is_a_get_route_of_the_api,
    base.test_the_node_pods_outlast_the_workers_grace_period,
    base.test_the_node_pods_run_as_the_images_non_root_user,
    base.test_every_container_has_resource_requests_and_a_memory_limit,
    base.test_every_image_is_pinned_to_a_version,
    base.test_every_pod_runs_non_root_under_the_default_seccomp_filter,
    base.test_every_container_has_a_read_only_root_and_no_capabilities,
    base.test_the_app_has_a_disruption_budget_and_an_autoscaler_over_its_deployment,
    base.test_the_nodes_limit_each_client_and_bound_the_queue_and_sync_work,
]


def load(name: str) -> dict:
    return yaml.safe_load((HA / name).read_text())


@pytest.fixture(scope="module")
def built() -> dict[str, dict]:
    """The objects ``kubectl apply -k ops/k8s/ha`` would create, by
    ``kind/name``: the base, the patches applied, the HA objects added."""
    objects = {}
    for path in base.manifest_paths():
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


def env(container: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def ha_containers(built) -> dict[str, dict]:
    spec = built["StatefulSet/valkey-ha"]["spec"]["template"]["spec"]
    return {c["name"]: c for c in spec["containers"]}


def test_the_kustomization_builds_on_the_base_and_lists_every_ha_file_once():
    listed = KUSTOMIZATION["resources"] + [p["path"] for p in KUSTOMIZATION["patches"]]
    assert listed[0] == "../"
    assert sorted(listed[1:]) == sorted(
        p.name for p in HA.glob("*.yaml") if p.stem != "kustomization"
    )


@pytest.mark.parametrize("check", BASE_CHECKS, ids=lambda check: check.__name__)
def test_the_overlay_keeps_the_bases_promises(built, check):
    check(built)


@pytest.mark.parametrize("version", base.KUBERNETES_VERSIONS)
def test_every_object_of_the_overlay_is_valid_against_the_kubernetes_schemas(built, version):
    base.test_every_object_is_valid_against_the_kubernetes_schemas(built, version)


def test_the_single_valkey_is_replaced_by_the_ha_statefulset(built):
    for key in ("StatefulSet/valkey", "Service/valkey", "NetworkPolicy/allow-app-to-valkey"):
        assert key not in built, key
    assert built["StatefulSet/valkey-ha"]["spec"]["replicas"] == 3
    assert built["Service/valkey-ha"]["spec"]["clusterIP"] == "None"
    assert "ConfigMap/valkey-config" in built, "the HA pods run the base's start.sh"


def test_each_pod_runs_a_server_and_a_sentinel_from_the_bases_start_script(built):
    commands = {name: c["command"] for name, c in ha_containers(built).items()}
    assert commands == {
        "valkey": ["/bin/sh", "/etc/valkey/start.sh"],
        "sentinel": ["/bin/sh", "/etc/valkey/start.sh", "sentinel"],
    }
    script = built["ConfigMap/valkey-config"]["data"]["start.sh"]
    assert script == (base.OPS / "valkey" / "start.sh").read_text()


def test_the_nodes_ask_every_sentinel_by_its_pods_stable_name(built):
    statefulset = built["StatefulSet/valkey-ha"]
    service = built["Service/valkey-ha"]
    assert statefulset["spec"]["serviceName"] == service["metadata"]["name"]
    port = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "sentinel")
    pods = [f"valkey-ha-{n}.valkey-ha:{port}" for n in range(statefulset["spec"]["replicas"])]
    (node,) = built["Deployment/app"]["spec"]["template"]["spec"]["containers"]
    # The password file is mounted in the pod, not here: read the rest.
    settings = Settings.from_env(
        {k: v for k, v in env(node).items() if k != "VALKEY_PASSWORD_FILE"}
    )
    assert list(settings.valkey_sentinels) == pods
    assert settings.durable_ack is DurableAck.REPLICA
    for container in ha_containers(built).values():
        assert env(container)["VALKEY_SENTINELS"] == ",".join(pods), container["name"]
        assert env(container)["VALKEY_REPLICA_OF"] == "valkey-ha-0.valkey-ha 6379"
        assert env(container)["VALKEY_ANNOUNCE_HOST"] == "$(POD_NAME).valkey-ha"
    sentinel = env(ha_containers(built)["sentinel"])
    assert int(sentinel["VALKEY_SENTINEL_QUORUM"]) * 2 > statefulset["spec"]["replicas"]


def test_the_passwords_come_from_secrets_the_user_creates(built):
    assert not base.by_kind(built, "Secret"), "no Secret (no password) is ever in the repository"
    volumes = {
        v["name"]: v for v in built["StatefulSet/valkey-ha"]["spec"]["template"]["spec"]["volumes"]
    }
    secrets = {name: v["secret"] for name, v in volumes.items() if "secret" in v}
    assert {s["secretName"] for s in secrets.values()} == {"valkey-password", "valkey-ha"}
    assert all(s["defaultMode"] == 0o440 for s in secrets.values())
    assert secrets["valkey-ha-sentinel"]["items"] == [{"key": "sentinel", "path": "sentinel"}]
    server = env(ha_containers(built)["valkey"])
    assert server["VALKEY_REPLICATION_PASSWORD_FILE"] == "/run/secrets/valkey-ha/replication"
    assert server["VALKEY_SENTINEL_PASSWORD_FILE"] == "/run/secrets/valkey-ha/sentinel"
    mounts = {m["name"] for m in ha_containers(built)["sentinel"]["volumeMounts"]}
    assert "valkey-ha" not in mounts and "valkey-password" not in mounts, (
        "a sentinel needs only its own password"
    )
    guide = (base.ROOT / "docs" / "deployment.md").read_text()
    assert "create secret generic valkey-ha" in guide


def test_the_generated_files_live_in_memory_volumes(built):
    spec = built["StatefulSet/valkey-ha"]["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    for name, container in ha_containers(built).items():
        acl_dir = env(container)["VALKEY_ACL_DIR"]
        (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == acl_dir]
        assert volumes[mount["name"]]["emptyDir"]["medium"] == "Memory", name


def test_network_policies_open_only_app_to_valkey_ha_and_the_ha_pods_to_each_other(built):
    policies = base.by_kind(built, "NetworkPolicy")
    (deny,) = [p for p in policies if p["spec"]["podSelector"] == {}]
    assert "ingress" not in deny["spec"]
    (policy,) = [p for p in policies if base.selects(p, "valkey-ha")]
    (rule,) = policy["spec"]["ingress"]
    sources = {
        peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for peer in rule["from"]
    }
    assert sources == {"app", "valkey-ha"}
    container_ports = {
        port["containerPort"] for c in ha_containers(built).values() for port in c["ports"]
    }
    assert sorted(p["port"] for p in rule["ports"]) == sorted(container_ports) == [6379, 26379]


@pytest.mark.parametrize(
    "path", sorted(p for p in HA.glob("*.yaml") if p.stem != "kustomization"), ids=lambda p: p.name
)
def test_each_ha_file_holds_exactly_one_object(path):
    base.test_each_file_holds_exactly_one_object(path)


def test_each_server_keeps_its_data_on_a_volume_of_its_own(built):
    statefulset = built["StatefulSet/valkey-ha"]
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in ha_containers(built)["valkey"]["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == "/data"
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]


def test_the_ha_pods_are_spread_over_machines_so_one_machine_takes_one_vote(built):
    spec = built["StatefulSet/valkey-ha"]["spec"]
    (term,) = spec["template"]["spec"]["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    # The term selects the HA pods themselves: no two of them on one machine.
    assert term["podAffinityTerm"]["labelSelector"] == spec["selector"]
