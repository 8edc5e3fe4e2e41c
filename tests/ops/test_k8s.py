"""The Kubernetes manifests in ops/k8s/, checked without a cluster: each
object validated (strictly: no unknown field) against the Kubernetes JSON
schemas shipped offline by the kubernetes-validate package, then the
promises between objects: labels and selectors agree, probes ask routes the
API has, grace periods outlast the workers', the ConfigMaps hold the same
files as ops/, and the kustomization lists every manifest."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.ops.conftest import OPS, ROOT, sync_work_fits_the_gateway
from wizard.api import make_app
from wizard.config import Settings
from wizard.router import MethodNotAllowed, NotFound
from wizard.supervisor import KILL_MARGIN

K8S = OPS / "k8s"
NAMESPACE = "math-wizard"

#: The oldest Kubernetes minor release the manifests are checked against,
#: and the newest the schemas know.
KUBERNETES_VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]


def manifest_paths() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


@pytest.fixture(scope="module")
def objects() -> dict[str, dict]:
    """Every object, by file name."""
    return {path.name: yaml.safe_load(path.read_text()) for path in manifest_paths()}


def by_kind(objects: dict[str, dict], kind: str) -> list[dict]:
    return [obj for obj in objects.values() if obj["kind"] == kind]


def workload(objects: dict[str, dict], name: str) -> dict:
    (found,) = [
        obj
        for obj in objects.values()
        if obj["kind"] in ("Deployment", "StatefulSet") and obj["metadata"]["name"] == name
    ]
    return found


def containers(objects: dict[str, dict]) -> list[dict]:
    return [
        container
        for obj in objects.values()
        if obj["kind"] in ("Deployment", "StatefulSet")
        for container in obj["spec"]["template"]["spec"]["containers"]
    ]


@pytest.mark.parametrize("path", manifest_paths(), ids=lambda p: p.name)
def test_each_file_holds_exactly_one_object(path):
    documents = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    assert len(documents) == 1


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_is_valid_against_the_kubernetes_schemas(objects, version):
    for name, obj in objects.items():
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            # Re-raised with the file's name: which manifest, which field.
            raise AssertionError(f"{name}: {error.message} at {list(error.path)}") from None


def test_the_kustomization_lists_every_manifest_once():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    listed = kustomization["resources"]
    assert sorted(listed) == [path.name for path in manifest_paths()]
    assert len(set(listed)) == len(listed)
    assert listed[0] == "namespace.yaml", "the namespace first"


def test_every_object_lives_in_the_math_wizard_namespace(objects):
    for name, obj in objects.items():
        if obj["kind"] == "Namespace":
            assert obj["metadata"]["name"] == NAMESPACE
            continue
        assert obj["metadata"]["namespace"] == NAMESPACE, name


def test_each_workload_selects_the_pods_it_makes(objects):
    for obj in by_kind(objects, "Deployment") + by_kind(objects, "StatefulSet"):
        selector = obj["spec"]["selector"]["matchLabels"]
        labels = obj["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), obj["metadata"]["name"]


def test_each_service_selects_the_pods_of_exactly_one_workload(objects):
    pod_labels = [
        obj["spec"]["template"]["metadata"]["labels"]
        for obj in by_kind(objects, "Deployment") + by_kind(objects, "StatefulSet")
    ]
    for service in by_kind(objects, "Service"):
        selector = service["spec"]["selector"]
        matches = [labels for labels in pod_labels if selector.items() <= labels.items()]
        assert len(matches) == 1, service["metadata"]["name"]


def test_each_service_targets_a_port_its_pods_name(objects):
    for service in by_kind(objects, "Service"):
        target = workload(objects, service["metadata"]["name"])
        names = {
            port["name"]
            for container in target["spec"]["template"]["spec"]["containers"]
            for port in container["ports"]
        }
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in names, service["metadata"]["name"]


def test_the_app_runs_three_replicas_of_the_compose_image(objects):
    app = workload(objects, "app")
    assert app["spec"]["replicas"] == 3
    (container,) = app["spec"]["template"]["spec"]["containers"]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert container["image"] == compose["services"]["app"]["image"]
    assert container["imagePullPolicy"] == "IfNotPresent"


def test_the_app_probes_ask_readyz_for_traffic_and_healthz_for_life(objects):
    (container,) = workload(objects, "app")["spec"]["template"]["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"


def test_every_probe_path_is_a_get_route_of_the_api(objects):
    router = make_app(Settings(node_id="probe-check")).router
    for container in containers(objects):
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            path = container.get(probe, {}).get("httpGet", {}).get("path")
            if path is None:
                continue
            try:
                router.match("GET", path)
            except (NotFound, MethodNotAllowed):
                # The probe would fail forever: say which one.
                raise AssertionError(
                    f"{container['name']} {probe} asks {path}, no GET route"
                ) from None


def test_the_node_pods_outlast_the_workers_grace_period(objects):
    spec = workload(objects, "app")["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    env = {variable["name"]: variable.get("value") for variable in container["env"]}
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    needed = int(pre_stop[1]) + float(env["WIZARD_GRACE_SECONDS"]) + KILL_MARGIN
    assert spec["terminationGracePeriodSeconds"] > needed


def test_the_node_pods_run_as_the_images_non_root_user(objects):
    spec = workload(objects, "app")["spec"]["template"]["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == 10001
    (container,) = spec["containers"]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_every_container_has_resource_requests_and_a_memory_limit(objects):
    for container in containers(objects):
        resources = container["resources"]
        assert {"cpu", "memory"} <= resources["requests"].keys(), container["name"]
        assert "memory" in resources["limits"], container["name"]


def test_every_image_is_pinned_to_a_version(objects):
    for container in containers(objects):
        tag = container["image"].rpartition(":")[2]
        assert tag and tag != "latest" and tag[0].isdigit(), container["image"]


def test_the_nodes_find_valkey_through_its_service(objects):
    (container,) = workload(objects, "app")["spec"]["template"]["spec"]["containers"]
    env = {variable["name"]: variable.get("value") for variable in container["env"]}
    (service,) = [s for s in by_kind(objects, "Service") if s["metadata"]["name"] == "valkey"]
    port = service["spec"]["ports"][0]["port"]
    assert env["VALKEY_URL"] == f"valkey://wizard@valkey:{port}/0"
    assert env["VALKEY_PASSWORD_FILE"] == "/run/secrets/valkey/password"
    assert "WIZARD_NODE_ID" not in env, "the node id must default to the pod's hostname"


def test_the_statefulset_keeps_valkeys_data_on_a_claimed_volume(objects):
    valkey = workload(objects, "valkey")
    assert valkey["spec"]["serviceName"] == "valkey"
    (claim,) = valkey["spec"]["volumeClaimTemplates"]
    (container,) = valkey["spec"]["template"]["spec"]["containers"]
    mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == "/data"
    assert container["command"] == ["/bin/sh", "/etc/valkey/start.sh"]


def test_the_gateway_balances_over_the_headless_app_service(objects):
    (service,) = [s for s in by_kind(objects, "Service") if s["metadata"]["name"] == "app"]
    assert service["spec"]["clusterIP"] == "None"
    conf = objects["gateway-configmap.yaml"]["data"]["nginx.conf"]
    assert f"server app.{NAMESPACE}.svc.cluster.local:8000 resolve" in conf
    assert "upstream wizard_nodes" in conf


@pytest.mark.parametrize(
    ("manifest", "key", "source"),
    [
        ("gateway-configmap.yaml", "wizard-http.conf", "nginx/wizard-http.conf"),
        ("gateway-configmap.yaml", "wizard-realip.conf", "nginx/wizard-realip.conf"),
        ("gateway-configmap.yaml", "wizard-limits.conf", "nginx/wizard-limits.conf"),
        ("gateway-configmap.yaml", "wizard-locations.conf", "nginx/wizard-locations.conf"),
        ("gateway-configmap.yaml", "security-headers.conf", "nginx/security-headers.conf"),
        ("valkey-configmap.yaml", "valkey.conf", "valkey/valkey.conf"),
        ("valkey-configmap.yaml", "wizard-user.acl", "valkey/wizard-user.acl"),
        ("valkey-configmap.yaml", "start.sh", "valkey/start.sh"),
    ],
)
def test_each_configmap_copy_is_identical_to_its_file_in_ops(objects, manifest, key, source):
    copy = objects[manifest]["data"][key]
    assert copy == (OPS / source).read_text(), (
        f"ops/k8s/{manifest} key {key} differs from ops/{source}: copy the file into it"
    )


def pod_specs(objects: dict[str, dict]) -> dict[str, dict]:
    return {
        obj["metadata"]["name"]: obj["spec"]["template"]["spec"]
        for obj in objects.values()
        if obj["kind"] in ("Deployment", "StatefulSet")
    }


def test_every_pod_runs_non_root_under_the_default_seccomp_filter(objects):
    for name, spec in pod_specs(objects).items():
        context = spec["securityContext"]
        assert context["runAsNonRoot"] is True, name
        assert context["runAsUser"] > 0, name
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}, name


def test_every_container_has_a_read_only_root_and_no_capabilities(objects):
    for container in containers(objects):
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True, container["name"]
        assert context["allowPrivilegeEscalation"] is False, container["name"]
        assert context["capabilities"]["drop"] == ["ALL"], container["name"]
        assert "cpu" in container["resources"]["limits"], container["name"]


def test_the_valkey_password_comes_from_a_secret_readable_by_the_group_only(objects):
    for name in ("app", "valkey"):
        volumes = {v["name"]: v for v in pod_specs(objects)[name]["volumes"]}
        secret = volumes["valkey-password"]["secret"]
        assert secret["secretName"] == "valkey-password", name
        assert secret["defaultMode"] == 0o440, name
    assert not by_kind(objects, "Secret"), "no Secret (no password) is ever in the repository"


def selects(policy: dict, component: str) -> bool:
    labels = policy["spec"]["podSelector"].get("matchLabels", {})
    return labels.get("app.kubernetes.io/component") == component


def test_network_policies_allow_only_gateway_to_app_and_app_to_valkey(objects):
    policies = by_kind(objects, "NetworkPolicy")
    (deny,) = [p for p in policies if p["spec"]["podSelector"] == {}]
    assert deny["spec"]["policyTypes"] == ["Ingress"] and "ingress" not in deny["spec"]
    expected = {"app": ("gateway", 8000), "valkey": ("app", 6379)}
    for component, (source, port) in expected.items():
        (policy,) = [p for p in policies if selects(p, component)]
        (rule,) = policy["spec"]["ingress"]
        (peer,) = rule["from"]
        assert peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == source
        assert [p["port"] for p in rule["ports"]] == [port]
    (gateway,) = [p for p in policies if selects(p, "gateway")]
    (rule,) = gateway["spec"]["ingress"]
    container_ports = {
        port["containerPort"]
        for c in pod_specs(objects)["gateway"]["containers"]
        for port in c["ports"]
    }
    assert [p["port"] for p in rule["ports"]] == sorted(container_ports)


def test_the_app_has_a_disruption_budget_and_an_autoscaler_over_its_deployment(objects):
    app = workload(objects, "app")
    labels = app["spec"]["selector"]["matchLabels"]
    (budget,) = by_kind(objects, "PodDisruptionBudget")
    assert budget["spec"]["selector"]["matchLabels"] == labels
    assert 0 < budget["spec"]["minAvailable"] < app["spec"]["replicas"]
    (scaler,) = by_kind(objects, "HorizontalPodAutoscaler")
    assert scaler["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "app",
    }
    assert scaler["spec"]["minReplicas"] == app["spec"]["replicas"]
    assert scaler["spec"]["maxReplicas"] > scaler["spec"]["minReplicas"]
    (container,) = app["spec"]["template"]["spec"]["containers"]
    assert "cpu" in container["resources"]["requests"], "CPU utilization needs a request"


def test_the_nodes_limit_each_client_and_bound_the_queue_and_sync_work(objects):
    (container,) = workload(objects, "app")["spec"]["template"]["spec"]["containers"]
    plain = {item["name"]: item["value"] for item in container["env"] if "value" in item}
    limits = (
        "WIZARD_RATE_LIMIT",
        "WIZARD_RATE_BURST",
        "WIZARD_MAX_PENDING",
        "WIZARD_SYNC_SLOTS",
        "WIZARD_WORK_SECONDS",
    )
    environment = {name: value for name, value in plain.items() if name in limits}
    settings = Settings.from_env(environment)

    assert settings.rate_limit > 0 and settings.rate_burst >= 1
    assert settings.max_pending <= 100_000
    assert settings.sync_slots < settings.threads
    assert sync_work_fits_the_gateway(settings), (settings.sync_slots, settings.work_seconds)
