"""The edge settings of every gateway configuration, read from the files:
the dev (compose) gateway, the public gateway, the Kubernetes gateway and
the one ``python -m wizard up`` writes all apply the same per-address limits,
the same problem documents and timeouts (shared include files), enough
connections for a slowloris to leave room, and never take a busy node out
of the round; the public gateway believes CF-Connecting-IP only from the
compose network that holds cloudflared, which a real nginx running the
public configuration shows. (tests/edge runs the local gateway for real.)
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import ssl
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.ops.conftest import OPS, ROOT, add_read_timeout, sync_work_fits_the_gateway
from tests.ops.test_nginx import free_listen_ports, replace
from tests.support import wait_for
from wizard.cluster import LocalCluster, free_port
from wizard.config import Settings

NGINX = OPS / "nginx"


def top_level_configs(tmp_path) -> dict[str, str]:
    """The text of every top-level gateway configuration, by name."""
    configmap = yaml.safe_load((OPS / "k8s" / "gateway-configmap.yaml").read_text())
    local = LocalCluster(gateway_port=free_port(), nodes=2, var_dir=tmp_path)
    return {
        "compose": (NGINX / "nginx.conf").read_text(),
        "public": (NGINX / "nginx.public.conf").read_text(),
        "kubernetes": configmap["data"]["nginx.conf"],
        "local": local.write_nginx_conf().read_text(),
    }


@pytest.fixture
def configs(tmp_path) -> dict[str, str]:
    return top_level_configs(tmp_path)


def directive(text: str, name: str) -> list[str]:
    """The arguments of every ``name ...;`` line of an nginx configuration."""
    return re.findall(rf"^\s*{name}\s+([^;]*);", text, re.M)


def test_every_gateway_applies_the_per_address_limits_and_counts_everyone(configs):
    for name, text in configs.items():
        assert any(line.endswith("wizard-limits.conf") for line in directive(text, "include")), name
        geo = re.search(r"geo \$wizard_unlimited \{\s*default (\d);\s*\}", text)
        assert geo and geo.group(1) == "0", name


def test_the_load_tests_gateway_counts_nobody(tmp_path):
    conf = LocalCluster(gateway_port=free_port(), nodes=1, var_dir=tmp_path, gateway_limits=False)
    text = conf.write_nginx_conf().read_text()
    assert re.search(r"geo \$wizard_unlimited \{\s*default 1;\s*\}", text)


def test_every_gateway_has_room_for_a_slowloris_and_the_files_to_hold_it(configs):
    for name, text in configs.items():
        (connections,) = directive(text, "worker_connections")
        (files,) = directive(text, "worker_rlimit_nofile")
        # Two sockets per proxied request, plus 1,100 half-sent requests.
        assert int(connections) >= 4096, name
        assert int(files) >= 2 * int(connections), name


def test_no_gateway_takes_a_slow_node_out_of_the_round(configs):
    upstreams = [
        configs["local"],
        configs["kubernetes"],
        (NGINX / "compose-upstream.conf").read_text(),
    ]
    for text in upstreams:
        servers = [line for line in directive(text, "server") if "{" not in line]
        assert servers
        assert all("max_fails=0" in server for server in servers), servers


def test_the_first_hop_gateways_trust_forwarded_headers_only_from_named_proxies(configs):
    realip = (NGINX / "wizard-realip.conf").read_text()
    assert directive(realip, "real_ip_header") == ["X-Forwarded-For"]
    # 127.0.0.1 only: the test clients at 127.0.0.2... are untrusted.
    assert directive(realip, "set_real_ip_from") == ["127.0.0.1", "::1"]
    for name in ("compose", "kubernetes", "local"):
        assert any(
            line.endswith("wizard-realip.conf") for line in directive(configs[name], "include")
        ), name


def test_the_public_gateway_believes_cf_connecting_ip_only_from_the_edge_network(configs):
    public = configs["public"]
    assert directive(public, "real_ip_header") == ["CF-Connecting-IP"]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    (edge,) = compose["networks"]["edge"]["ipam"]["config"]
    assert directive(public, "set_real_ip_from") == [edge["subnet"]]
    # Only cloudflared and the public gateway are on that network.
    on_edge = {name for name, s in compose["services"].items() if "edge" in s.get("networks", [])}
    assert on_edge == {"cloudflared", "gateway-public"}
    assert not any(line.endswith("wizard-realip.conf") for line in directive(public, "include"))


def test_the_gateway_replaces_forwarded_headers_instead_of_appending_to_them():
    http = (NGINX / "wizard-http.conf").read_text()
    headers = dict(line.split(None, 1) for line in directive(http, "proxy_set_header"))
    assert headers["X-Forwarded-For"] == "$remote_addr"
    assert headers["X-Real-IP"] == "$remote_addr"
    assert "$proxy_add_x_forwarded_for" not in http


def test_every_status_nginx_maps_has_a_problem_document_with_that_status():
    locations = (NGINX / "wizard-locations.conf").read_text()
    pages = re.findall(r"^error_page ([\d ]+?) (=\d+ )?(/_problems/\S+);", locations, re.M)
    mapped = {int(code) for codes, _, _ in pages for code in codes.split()}
    assert mapped >= {400, 404, 405, 408, 413, 414, 429, 494, 500, 501, 502, 503, 504, 505}
    for codes, override, page in pages:
        body = re.search(rf"location = {re.escape(page)} \{{(.*?)\n\}}", locations, re.S)
        assert body, page
        assert "internal;" in body.group(1)
        assert "default_type application/problem+json;" in body.group(1)
        (status,) = re.findall(r"return (\d+) '", body.group(1))
        expected = override.strip("= ") if override else codes.split()[0]
        assert status == expected, page
        assert f'"status":{status},' in body.group(1)


def test_every_problem_document_the_gateways_write_is_json_ending_in_a_newline():
    # README: every JSON answer ends with a newline (the shell prompt after
    # curl starts on its own line); nginx turns a backslash-n in a quoted
    # string into one.
    for path in (NGINX / "wizard-locations.conf", NGINX / "nginx.public.conf"):
        bodies = re.findall(r"return \d+ '(\{.*?)';", path.read_text())
        assert bodies, path.name
        for body in bodies:
            assert body.endswith("}\\n"), (path.name, body)
            assert json.loads(body.removesuffix("\\n"))["handled_by"] == "gateway"


def test_a_timed_out_add_is_never_sent_to_another_node_and_a_post_task_waits_briefly():
    locations = (NGINX / "wizard-locations.conf").read_text()
    add = re.search(r"location = /add \{(.*?)\}", locations, re.S).group(1)
    task = re.search(r"location = /task \{(.*?)\}", locations, re.S).group(1)
    assert directive(add, "proxy_next_upstream") == ["error"]
    assert directive(task, "proxy_read_timeout") == ["3s"]
    http = (NGINX / "wizard-http.conf").read_text()
    # POSTs are never re-sent once they reached a node: no non_idempotent.
    for line in directive(http, "proxy_next_upstream"):
        assert "non_idempotent" not in line
    assert directive(http, "proxy_connect_timeout") == ["1s"]


def test_a_node_with_default_settings_answers_a_full_load_of_sync_adds_in_half_the_timeout():
    assert add_read_timeout() == 8
    assert sync_work_fits_the_gateway(Settings())


def test_while_replicas_change_a_request_goes_on_to_a_live_node():
    # Compose and Kubernetes gateways: removed replicas leave the round within
    # 1 s (the next DNS lookup), and until then a request that meets one goes
    # on to the next node, every node at most once, rather than stopping
    # after 3 (scaling 5 to 3 leaves two dead addresses); busy nodes are
    # never taken out (max_fails=0).
    k8s = (OPS / "k8s" / "gateway-configmap.yaml").read_text()
    upstreams = {"compose": (NGINX / "compose-upstream.conf").read_text(), "k8s": k8s}
    for name, text in upstreams.items():
        (resolver,) = directive(text, "resolver")
        assert "valid=1s" in resolver.split(), name
        (server,) = [line for line in directive(text, "server") if " resolve" in line]
        assert "max_fails=0" in server.split(), name
    for name, text in {"shared": (NGINX / "wizard-http.conf").read_text(), "k8s": k8s}.items():
        # The first is the http{} default (the k8s copy also holds /add's own).
        assert directive(text, "proxy_next_upstream")[0] == "error timeout", name
        assert directive(text, "proxy_next_upstream_tries") == ["0"], name
        assert directive(text, "proxy_next_upstream_timeout") == ["10s"], name
        assert directive(text, "proxy_connect_timeout") == ["1s"], name


# --- the public gateway, run for real -----------------------------------


@pytest.fixture
def public_nginx(nginx, cluster, origin_certificate, tmp_path):
    """Start the public gateway's configuration with a real nginx, upstream
    pointed at the shared local cluster's nodes; ``trusted`` replaces the
    edge subnet it believes CF-Connecting-IP from. Returns a function
    (trusted) -> (https port, path of nginx's output); stopped by PID."""
    started = []

    def start(trusted: str | None = None) -> tuple[int, Path]:
        folder = tmp_path / f"wizard-{len(started)}"
        shutil.copytree(NGINX, folder)
        certificate, key = origin_certificate
        shutil.copy(certificate, folder / "certs" / "origin.pem")
        shutil.copy(key, folder / "certs" / "origin.key")
        ports = free_listen_ports(folder)
        servers = "".join(f"    server 127.0.0.1:{p};\n" for p in cluster.node_ports.values())
        (folder / "compose-upstream.conf").write_text(
            f"upstream wizard_nodes {{\n    zone wizard_nodes 64k;\n{servers}}}\n"
        )
        if trusted:
            conf = folder / "nginx.public.conf"
            (subnet,) = directive(conf.read_text(), "set_real_ip_from")
            replace(conf, f"set_real_ip_from {subnet};", f"set_real_ip_from {trusted};")
        prefix, output = folder / "prefix", folder / "nginx.log"
        prefix.mkdir()
        with open(output, "wb") as log:
            process = subprocess.Popen(
                [
                    nginx,
                    "-p",
                    str(prefix),
                    "-c",
                    str(folder / "nginx.public.conf"),
                    "-g",
                    "daemon off;",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        started.append(process)
        wait_for(lambda: _listening(ports["https"]) or process.poll() is not None, timeout=10)
        assert process.poll() is None, output.read_text()
        return ports["https"], output

    yield start
    for process in started:
        # SIGTERM: nginx's fast shutdown; the master stops its workers first.
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        # Not listening yet.
        return False
    return True


@pytest.fixture
def tls(origin_certificate) -> ssl.SSLContext:
    """A client context that verifies the throwaway origin certificate."""
    certificate, _ = origin_certificate
    return ssl.create_default_context(cafile=str(certificate))


def logged_remote(
    tls: ssl.SSLContext, port: int, output: Path, source: str, cf_connecting_ip: str
) -> str:
    """GET /whoami over TLS from ``source`` with a CF-Connecting-IP header
    and an Access token; returns the client address nginx logged for it."""
    request_id = f"public-{source}-{cf_connecting_ip}"
    request = (
        f"GET /whoami HTTP/1.1\r\nHost: g\r\nConnection: close\r\n"
        f"CF-Connecting-IP: {cf_connecting_ip}\r\nX-Request-ID: {request_id}\r\n"
        "Cf-Access-Jwt-Assertion: a-jwt-that-cloudflared-verified\r\n\r\n"
    )
    address = ("127.0.0.1", port)
    with socket.create_connection(address, timeout=10, source_address=(source, 0)) as raw:
        with tls.wrap_socket(raw, server_hostname="127.0.0.1") as conn:
            conn.sendall(request.encode())
            assert conn.recv(12).startswith(b"HTTP/1.1 ")

    def entry():
        for line in output.read_text().splitlines():
            if line.startswith("{") and json.loads(line).get("request_id") == request_id:
                return json.loads(line)
        return None

    return wait_for(entry, timeout=10, what="the access-log line")["remote"]


def test_the_public_gateway_ignores_cf_connecting_ip_from_outside_the_edge_network(
    public_nginx, tls
):
    port, output = public_nginx()
    assert logged_remote(tls, port, output, "127.0.0.2", "203.0.113.5") == "127.0.0.2"


def test_the_public_gateway_takes_the_client_from_cf_connecting_ip_sent_by_cloudflared(
    public_nginx, tls
):
    # Here "cloudflared" is 127.0.0.3: the copy trusts it instead of the edge subnet.
    port, output = public_nginx(trusted="127.0.0.3")
    assert logged_remote(tls, port, output, "127.0.0.3", "203.0.113.6") == "203.0.113.6"
    assert logged_remote(tls, port, output, "127.0.0.4", "203.0.113.7") == "127.0.0.4"
