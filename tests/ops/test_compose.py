"""docker-compose.yml, checked without a Docker engine: valid against the
compose specification's JSON schema (the copy vendored in check-jsonschema,
``--builtin-schema vendor.compose-spec``), and keeping the promises the
architecture makes: three replicas behind an init, start order by
healthchecks, Valkey unreachable from outside, pinned images, each service
only on the networks it needs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.ops.conftest import OPS, ROOT, sync_work_fits_the_gateway
from wizard.config import Settings
from wizard.supervisor import KILL_MARGIN

COMPOSE = ROOT / "docker-compose.yml"

#: check-jsonschema, installed next to this Python.
CHECK_JSONSCHEMA = str(Path(sys.executable).parent / "check-jsonschema")

#: Bind-mounted files each person brings for the public profile (secrets,
#: or public files fetched from Cloudflare); docs/deployment.md names them.
BROUGHT_BY_THE_USER = {
    "ops/cloudflared/origin_ca_rsa_root.pem",
    "ops/cloudflared/tunnel-token",
}


#: The ha profile's Valkey servers (`valkey` is the first primary) and sentinels.
HA_SERVERS = ["valkey", "valkey-replica-1", "valkey-replica-2"]
SENTINELS = ["sentinel-1", "sentinel-2", "sentinel-3"]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def check_against_compose_spec(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CHECK_JSONSCHEMA, "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def seconds(duration: str) -> float:
    """A compose duration such as ``30s``, ``1m30s`` or ``500ms``, in seconds."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", duration)
    assert "".join(n + u for n, u in parts) == duration, f"not a duration: {duration!r}"
    return sum(float(number) * units[unit] for number, unit in parts)


def test_the_compose_file_is_valid_against_the_compose_specification():
    result = check_against_compose_spec(COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_would_catch_a_misspelled_setting(tmp_path):
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE.read_text().replace("stop_grace_period:", "stop_grace_periods:"))
    result = check_against_compose_spec(broken)
    assert result.returncode != 0
    assert "stop_grace_periods" in result.stdout


def test_the_file_follows_the_compose_specification_without_a_version_key(compose):
    assert "version" not in compose


def test_three_app_replicas_run_behind_an_init_process(services):
    app = services["app"]
    assert app["deploy"]["replicas"] == 3
    assert app["init"] is True
    assert app["build"]["dockerfile"] == "Dockerfile"


def test_every_long_running_service_except_the_distroless_tunnel_has_a_healthcheck(services):
    for name, service in services.items():
        if name == "cloudflared":
            assert "healthcheck" not in service
            continue
        assert service["healthcheck"]["test"], name


def test_the_app_is_healthy_only_when_ready_not_merely_alive(services):
    command = " ".join(services["app"]["healthcheck"]["test"])
    assert "http://127.0.0.1:8000/readyz" in command


def test_start_order_is_set_by_healthchecks(services):
    expected = {
        "app": "valkey",
        "valkey-replica-1": "valkey",
        "valkey-replica-2": "valkey",
        "sentinel-1": "valkey",
        "sentinel-2": "valkey",
        "sentinel-3": "valkey",
        "gateway": "app",
        "gateway-public": "app",
        "cloudflared": "gateway-public",
    }
    for name, dependency in expected.items():
        assert services[name]["depends_on"] == {dependency: {"condition": "service_healthy"}}


def test_valkey_publishes_no_port_and_is_only_on_the_internal_backend_network(compose, services):
    valkey = services["valkey"]
    assert "ports" not in valkey
    assert "expose" not in valkey
    assert valkey["networks"] == ["backend"]
    assert compose["networks"]["backend"]["internal"] is True


def test_each_service_is_only_on_the_networks_it_needs(services):
    networks = {name: sorted(service["networks"]) for name, service in services.items()}
    assert networks == {
        "valkey": ["backend"],
        **{name: ["backend"] for name in HA_SERVERS[1:] + SENTINELS},
        "app": ["backend", "frontend"],
        "gateway": ["frontend"],
        "gateway-public": ["edge", "frontend"],
        "cloudflared": ["edge"],
    }


def test_only_the_dev_gateway_publishes_a_host_port(services):
    published = {name: service["ports"] for name, service in services.items() if "ports" in service}
    assert published == {"gateway": ["80:80"]}


def test_every_image_is_pinned_to_a_version(services):
    for name, service in services.items():
        image = service["image"]
        repository, _, tag = image.rpartition(":")
        assert repository and tag != "latest", f"{name}: {image}"
        assert re.match(r"\d+\.\d+\.\d+", tag), f"{name}: {image} is not pinned to a release"


def test_the_gateways_run_an_nginx_with_upstream_resolve(services):
    for name in ("gateway", "gateway-public"):
        image = services[name]["image"]
        major, minor, patch = map(int, re.match(r"nginx:(\d+)\.(\d+)\.(\d+)", image).groups())
        assert (major, minor, patch) >= (1, 27, 3), image


def test_valkey_keeps_its_append_only_file_in_a_named_volume(compose, services):
    volumes = services["valkey"]["volumes"]
    assert "valkey-data:/data" in volumes
    assert "valkey-data" in compose["volumes"]


def test_valkey_reads_the_shared_configuration_read_only(services):
    valkey = services["valkey"]
    config = next(v for v in valkey["volumes"] if isinstance(v, dict))
    assert config == {
        "type": "bind",
        "source": "./ops/valkey",
        "target": "/etc/valkey",
        "read_only": True,
    }
    assert valkey["entrypoint"] == ["/bin/sh", "/etc/valkey/start.sh"]
    for name in ("start.sh", "valkey.conf", "wizard-user.acl"):
        assert (OPS / "valkey" / name).is_file()


def test_valkey_and_the_nodes_share_a_password_secret_never_an_environment_value(compose, services):
    assert compose["secrets"]["valkey_password"]["file"] == "./var/secrets/valkey-wizard-password"
    assert services["app"]["secrets"] == ["valkey_password"]
    for name in ("app", *HA_SERVERS):
        assert "valkey_password" in services[name]["secrets"], name
        assert services[name]["environment"]["VALKEY_PASSWORD_FILE"] == (
            "/run/secrets/valkey_password"
        )
    healthcheck = " ".join(services["valkey"]["healthcheck"]["test"])
    assert "--user wizard" in healthcheck and "/run/secrets/valkey_password" in healthcheck


def test_every_container_is_locked_down(services):
    for name, service in services.items():
        assert service["cap_drop"] == ["ALL"], name
        assert service["security_opt"] == ["no-new-privileges:true"], name
        assert service["read_only"] is True, name
        limits = service["deploy"]["resources"]["limits"]
        assert limits["memory"] and limits["cpus"], name


def test_no_container_runs_as_root(services):
    # The app's and cloudflared's images set a non-root USER themselves.
    for name in HA_SERVERS + SENTINELS:
        assert services[name]["user"] == "999:1000", name
    assert services["gateway"]["user"] == services["gateway-public"]["user"] == "101:101"


def test_each_process_that_writes_has_a_tmpfs_there(services):
    for name in HA_SERVERS + SENTINELS:
        assert [t.split(":")[0] for t in services[name]["tmpfs"]] == ["/run/valkey"], name
    for name in ("gateway", "gateway-public"):
        mounts = [t.split(":")[0] for t in services[name]["tmpfs"]]
        assert mounts == ["/var/run", "/var/cache/nginx"], name


def test_the_valkey_configuration_keeps_every_write_and_evicts_nothing():
    settings = {}
    for line in (OPS / "valkey" / "valkey.conf").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition(" ")
            settings[name] = value
    assert settings["appendonly"] == "yes"
    assert settings["appendfsync"] == "everysec"
    assert settings["maxmemory-policy"] == "noeviction"


def test_the_app_reaches_valkey_by_its_service_name(services):
    assert services["app"]["environment"]["VALKEY_URL"] == "valkey://wizard@valkey:6379/0"


def test_every_app_variable_is_a_setting_the_node_reads(services):
    known = {variable for variable, _ in Settings._parsers().values()}
    environment = services["app"]["environment"]
    assert set(environment) <= known
    assert "WIZARD_NODE_ID" not in environment, "the node id must default to the container hostname"


def test_the_app_stop_grace_period_outlasts_the_workers_grace_period(services):
    app = services["app"]
    worker_grace = float(app["environment"]["WIZARD_GRACE_SECONDS"])
    # The supervisor waits the grace period plus KILL_MARGIN before it kills
    # its children; Docker's SIGKILL must come later still.
    assert seconds(app["stop_grace_period"]) > worker_grace + KILL_MARGIN


def test_the_gateways_start_the_mounted_ops_nginx_configurations(services):
    expected = {"gateway": "nginx.conf", "gateway-public": "nginx.public.conf"}
    for name, conf in expected.items():
        gateway = services[name]
        assert gateway["command"] == [
            "nginx",
            "-g",
            "daemon off;",
            "-c",
            f"/etc/nginx/wizard/{conf}",
        ]
        assert {
            "type": "bind",
            "source": "./ops/nginx",
            "target": "/etc/nginx/wizard",
            "read_only": True,
        } in gateway["volumes"]
        assert (OPS / "nginx" / conf).is_file()


def test_the_public_profile_holds_the_tunnel_and_the_tls_gateway(services):
    in_public = {
        name for name, service in services.items() if "public" in service.get("profiles", [])
    }
    assert in_public == {"gateway-public", "cloudflared"}
    assert "profiles" not in services["app"]


def test_the_public_profile_starts_no_listener_on_the_host(services):
    started = {
        name
        for name, service in services.items()
        if "profiles" not in service or "public" in service["profiles"]
    }
    assert "gateway" not in started, "the plain-HTTP dev gateway is in the dev profile only"
    assert all("ports" not in services[name] for name in started)


def test_the_tunnel_token_is_a_secret_file_never_an_environment_variable(compose, services):
    cloudflared = services["cloudflared"]
    assert "environment" not in cloudflared
    assert cloudflared["secrets"] == ["tunnel_token"]
    command = cloudflared["command"]
    assert command[command.index("--token-file") + 1] == "/run/secrets/tunnel_token"
    assert compose["secrets"]["tunnel_token"]["file"] == "./ops/cloudflared/tunnel-token"
    ignored = (OPS / "cloudflared" / ".gitignore").read_text().split()
    assert "tunnel-token" in ignored


def test_secret_files_are_read_through_the_owners_group_never_world_readable(services):
    # Compose bind-mounts secret files with their host mode (uid/gid/mode
    # are Swarm-only): `make up`/`make public` set 0640, and only the
    # services that read one get the owner's group.
    readers = {*HA_SERVERS, *SENTINELS, "app", "gateway-public", "cloudflared"}
    for name, service in services.items():
        has_group = service.get("group_add") == ["${WIZARD_SECRETS_GID:-1000}"]
        assert has_group == (name in readers), name
    makefile = (ROOT / "Makefile").read_text()
    assert "chmod 640 $(VALKEY_SECRET) $(VALKEY_HA_SECRETS)\n" in makefile
    assert (
        "chmod 640 $(VALKEY_SECRET) $(VALKEY_HA_SECRETS) ops/cloudflared/tunnel-token"
        " ops/nginx/certs/origin.key"
    ) in makefile
    guide = (ROOT / "docs" / "deployment.md").read_text()
    assert "chmod 644 ops" not in guide


def test_every_bind_mounted_file_is_in_the_repository_or_brought_by_the_user(services):
    for name, service in services.items():
        for volume in service.get("volumes", []):
            if not isinstance(volume, dict):
                continue
            source = volume["source"].removeprefix("./")
            assert volume["read_only"] is True, f"{name}: {source}"
            assert (ROOT / source).exists() or source in BROUGHT_BY_THE_USER, f"{name}: {source}"


def test_the_deployment_guide_explains_each_file_the_user_brings():
    guide = (ROOT / "docs" / "deployment.md").read_text()
    for path in BROUGHT_BY_THE_USER | {"ops/nginx/certs/origin.pem", "ops/nginx/certs/origin.key"}:
        assert path in guide, path


def test_the_nodes_limit_each_client_and_bound_the_queue_and_sync_work(services):
    limits = (
        "WIZARD_RATE_LIMIT",
        "WIZARD_RATE_BURST",
        "WIZARD_MAX_PENDING",
        "WIZARD_SYNC_SLOTS",
        "WIZARD_WORK_SECONDS",
    )
    environment = {
        name: compose_default(value)
        for name, value in services["app"]["environment"].items()
        if name in limits
    }
    settings = Settings.from_env(environment)

    assert settings.rate_limit > 0 and settings.rate_burst >= 1
    assert settings.max_pending <= 100_000
    assert settings.sync_slots < settings.threads
    assert sync_work_fits_the_gateway(settings), (settings.sync_slots, settings.work_seconds)


def compose_default(value: str) -> str:
    """``value`` as compose reads it with nothing set in the shell: a
    ``${NAME:-default}`` becomes its default."""
    match = re.fullmatch(r"\$\{[A-Z_]+:-(.*)\}", value)
    return match[1] if match else value


# --- the ha profile: `make up HA=1` -------------------------------------------


def makefile_value(name: str) -> str:
    """The right-hand side of ``NAME :=`` in the Makefile."""
    match = re.search(rf"^{name} := (.*)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert match, name
    return match.group(1)


def test_the_ha_profile_holds_two_replicas_and_three_sentinels(services):
    in_ha = {name for name, service in services.items() if "ha" in service.get("profiles", [])}
    assert in_ha == {*HA_SERVERS[1:], *SENTINELS}
    assert "profiles" not in services["valkey"], "valkey is the first primary, in every profile"


def test_the_ha_servers_run_the_valkey_image_and_start_script(services):
    for name in HA_SERVERS + SENTINELS:
        service = services[name]
        assert service["image"] == services["valkey"]["image"], name
        assert service["entrypoint"][:2] == ["/bin/sh", "/etc/valkey/start.sh"], name
        assert {
            "type": "bind",
            "source": "./ops/valkey",
            "target": "/etc/valkey",
            "read_only": True,
        } in service["volumes"], name
        assert service["healthcheck"] and service["restart"] == "unless-stopped", name
    for name in SENTINELS:
        assert services[name]["entrypoint"][2:] == ["sentinel"], name


def test_each_ha_server_keeps_its_own_append_only_file(compose, services):
    volumes = [
        next(v for v in services[name]["volumes"] if isinstance(v, str)) for name in HA_SERVERS
    ]
    assert [v.split(":")[1] for v in volumes] == ["/data"] * 3
    named = [v.split(":")[0] for v in volumes]
    assert len(set(named)) == 3 and set(named) <= set(compose["volumes"])


def test_the_replication_and_sentinel_users_log_in_with_secret_files(compose, services):
    files = {
        "valkey_replication_password": "./var/secrets/valkey-replication-password",
        "valkey_sentinel_password": "./var/secrets/valkey-sentinel-password",
    }
    for secret, path in files.items():
        assert compose["secrets"][secret]["file"] == path
        assert path.removeprefix("./") in makefile_value("VALKEY_HA_SECRETS").split()
    for name in HA_SERVERS:
        environment = services[name]["environment"]
        assert set(services[name]["secrets"]) == {"valkey_password", *files}, name
        assert environment["VALKEY_REPLICATION_PASSWORD_FILE"] == (
            "/run/secrets/valkey_replication_password"
        )
        assert (
            environment["VALKEY_SENTINEL_PASSWORD_FILE"] == "/run/secrets/valkey_sentinel_password"
        )
    for name in SENTINELS:
        assert services[name]["secrets"] == ["valkey_sentinel_password"], name
        environment = services[name]["environment"]
        assert (
            environment["VALKEY_SENTINEL_PASSWORD_FILE"] == "/run/secrets/valkey_sentinel_password"
        )
    every_value = str([service.get("environment", {}) for service in services.values()])
    assert "PASSWORD=" not in every_value and "PASS=" not in every_value


def test_no_ha_service_publishes_or_exposes_a_port(services):
    for name in HA_SERVERS + SENTINELS:
        assert "ports" not in services[name] and "expose" not in services[name], name


def test_each_ha_service_announces_its_own_service_name(services):
    for name in HA_SERVERS + SENTINELS:
        assert services[name]["environment"]["VALKEY_ANNOUNCE_HOST"] == name


def test_replicas_and_sentinels_start_from_valkey_and_then_follow_the_sentinels(services):
    sentinels = makefile_value("COMPOSE_SENTINELS")
    assert sentinels == ",".join(f"{name}:26379" for name in SENTINELS)
    for name in HA_SERVERS[1:] + SENTINELS:
        environment = services[name]["environment"]
        assert environment["VALKEY_REPLICA_OF"] == "valkey 6379", name
        assert environment["VALKEY_SENTINELS"] == sentinels, name
    for name in SENTINELS:
        assert int(services[name]["environment"]["VALKEY_SENTINEL_QUORUM"]) == 2


def test_make_up_ha_points_the_nodes_and_valkey_at_the_sentinels(services):
    # compose cannot set a variable per profile: `make up HA=1` exports it,
    # and both the nodes and the first primary read it.
    for name in ("app", "valkey"):
        assert services[name]["environment"]["VALKEY_SENTINELS"] == "${VALKEY_SENTINELS:-}", name
    assert services["app"]["environment"]["VALKEY_SENTINEL_MASTER"] == "wizard"
    makefile = (ROOT / "Makefile").read_text()
    ha = re.search(r"^COMPOSE_HA = (.*)$", makefile, re.MULTILINE).group(1)
    assert "VALKEY_SENTINELS=$(COMPOSE_SENTINELS)" in ha
    assert "WIZARD_DURABLE_ACK=replica" in ha
    assert "--profile ha" in re.search(r"^COMPOSE_UP = (.*)$", makefile, re.MULTILINE).group(1)
    # A make of its own: not the flags of a `make test` this may run under.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    dry_run = subprocess.run(
        ["make", "--no-print-directory", "-n", "up", "HA=1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    (command,) = [line for line in dry_run.stdout.splitlines() if "docker compose" in line]
    assert "VALKEY_SENTINELS=" + makefile_value("COMPOSE_SENTINELS") in command
    assert "--profile dev --profile ha up" in command
