"""The public profile (``make public``) for real, without the tunnel: the
unchanged docker-compose.yml under podman on stand-in images (Debian + PyPI,
not the upstream alpine images), start order by health not exercised.

cloudflared cannot reach Cloudflare from here, so the path is tested from
the origin inward: TLS at the public gateway (published for the test on a
loopback port only), then the Cloudflare Access check at every node, with
tokens signed in the test by a key whose JWKS a container on the stack's own
network serves. Every request is one of a handful, each with a timeout.
"""

from __future__ import annotations

import socket
import ssl
import warnings

import pytest
import requests
import yaml
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.containers.conftest import PUBLIC_SERVICES
from tests.containers.engine import COMPOSE_FILE, HTTP_TIMEOUT, Stack, polite

pytestmark = pytest.mark.timeout(600)

#: The header Cloudflare Access adds to every request it let through.
ACCESS_HEADER = "Cf-Access-Jwt-Assertion"


def public_get(stack: Stack, path: str, **kwargs) -> requests.Response:
    """GET ``path`` over TLS from the public gateway's loopback port, trusting
    only the test's local CA (its certificate names 127.0.0.1)."""
    url = f"https://127.0.0.1:{stack.public_port}{path}"
    return polite("GET", url, verify=stack.certs / "local-ca.pem", **kwargs)


def profile_services(profile: str) -> dict[str, dict]:
    """The services docker-compose.yml starts with ``--profile <profile>``."""
    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    return {
        name: service
        for name, service in services.items()
        if not service.get("profiles") or profile in service["profiles"]
    }


def test_the_public_profile_has_no_plain_http_gateway_and_no_host_port():
    services = profile_services("public")
    assert "gateway" not in services
    assert {name: s["ports"] for name, s in services.items() if s.get("ports")} == {}
    assert set(PUBLIC_SERVICES) | {"cloudflared"} == set(services)


def test_every_public_service_is_healthy_without_the_tunnel(public_stack):
    running = {}
    for container in public_stack.containers():
        if container.name.endswith("_jwks"):
            continue
        assert (container.state, public_stack.health(container)) == ("running", "healthy")
        running[container.service] = running.get(container.service, 0) + 1
    assert running == PUBLIC_SERVICES


def test_only_the_tests_loopback_port_is_published_and_nothing_on_port_80(public_stack):
    published = {
        container.service: public_stack.podman.run("port", container.id).stdout.split("\n")
        for container in public_stack.containers()
    }
    published = {service: [line for line in lines if line] for service, lines in published.items()}
    expected = f"443/tcp -> 127.0.0.1:{public_stack.public_port}"
    assert {s: lines for s, lines in published.items() if lines} == {"gateway-public": [expected]}


def test_the_tls_gateway_answers_a_request_with_a_valid_access_token(public_stack, access_team):
    response = public_get(public_stack, "/whoami", headers={ACCESS_HEADER: access_team.token()})
    assert response.status_code == 200, response.text
    nodes = {c.hostname for c in public_stack.containers("app")}
    assert response.json()["node"] in nodes
    assert "max-age=" in response.headers["Strict-Transport-Security"]


def forged_tokens(team) -> dict[str, dict]:
    """Request headers that must not get through, by what is wrong with them."""
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return {
        "no token": {},
        "not a token": {ACCESS_HEADER: "x"},
        "expired": {ACCESS_HEADER: team.token(exp=1_000_000_000, nbf=999_999_000)},
        "another audience": {ACCESS_HEADER: team.token(aud=["someone-else"])},
        "another team": {ACCESS_HEADER: team.token(iss="https://elsewhere.cloudflareaccess.com")},
        "signed by another key": {ACCESS_HEADER: team.token(key=stranger)},
        "cookie only": {"Cookie": f"CF_Authorization={team.token()}"},
    }


def test_the_tls_gateway_refuses_every_request_without_a_valid_access_token(
    public_stack, access_team
):
    answers = {
        why: public_get(public_stack, "/whoami", headers=headers)
        for why, headers in forged_tokens(access_team).items()
    }
    statuses = {why: response.status_code for why, response in answers.items()}
    assert statuses == {why: 403 for why in answers}
    for why, response in answers.items():
        assert response.headers["Content-Type"].startswith("application/problem+json"), why


def handshake(port: int, version: ssl.TLSVersion) -> str:
    """A TLS handshake with 127.0.0.1:``port`` offering only ``version``
    (OpenSSL's security level lowered so the client may offer TLS 1.1);
    returns the version agreed. Raises ssl.SSLError when the server refuses."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        # Offering TLS 1.1 on purpose: Python warns that it is deprecated.
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = context.maximum_version = version
    with socket.create_connection(("127.0.0.1", port), timeout=HTTP_TIMEOUT) as raw:
        with context.wrap_socket(raw) as tls:
            return tls.version()


def test_tls_1_1_is_refused_and_tls_1_2_accepted(public_stack):
    assert handshake(public_stack.public_port, ssl.TLSVersion.TLSv1_2) == "TLSv1.2"
    with pytest.raises(ssl.SSLError) as refused:
        handshake(public_stack.public_port, ssl.TLSVersion.TLSv1_1)
    # The server's alert, not the client's own refusal to offer TLS 1.1.
    assert "PROTOCOL_VERSION" in refused.value.reason or "UNSUPPORTED_PROTOCOL" in str(
        refused.value
    ), refused.value


def test_every_container_runs_as_non_root_read_only_without_capabilities(public_stack):
    for container in public_stack.containers():
        if container.name.endswith("_jwks"):
            continue
        info = public_stack.podman.inspect(container.id)
        uid = public_stack.podman.run("exec", container.id, "id", "-u").stdout.strip()
        assert uid != "0", container
        assert info["HostConfig"]["ReadonlyRootfs"] is True, container
        assert not info.get("EffectiveCaps"), (container, info.get("EffectiveCaps"))
        assert "no-new-privileges" in " ".join(info["HostConfig"]["SecurityOpt"] or []), container
