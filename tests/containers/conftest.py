"""Fixtures of the container tests: podman with this folder's settings and
every image built (or kept from an earlier run), and one compose stack per
test module, brought up under a project name of its own and taken down at
the end of the module, whatever happened in between.

These tests run only when asked for (``make containers-test``, or
``pytest tests/containers``): see setup.cfg's ``norecursedirs``.
"""

from __future__ import annotations

import pytest

from tests.containers.access_tokens import CERTS_PATH, AccessTeam
from tests.containers.engine import LOGS_DIR, PROJECT_LABEL, Podman, Stack
from tests.containers.images import ensure_images
from tests.support import wait_for
from wizard.certs import make_certs

#: The dev profile's services and how many healthy containers each must have.
DEV_SERVICES = {"valkey": 1, "app": 3, "gateway": 1}
#: Longest wait for a stack to become healthy, seconds (first start, slow machine).
HEALTHY_TIMEOUT = 180.0


@pytest.fixture(scope="session")
def podman() -> Podman:
    """podman with tests/containers/containers.conf, and every stand-in image present."""
    engine = Podman()
    ensure_images(engine)
    return engine


@pytest.fixture(scope="module")
def dev_stack(podman):
    """The dev profile (``make up``): Valkey, three app replicas and the
    gateway, every one healthy. podman 4.3 starts them without waiting for
    each other's health (it ignores ``condition: service_healthy``), so the
    start order of the compose file is not exercised; this waits instead."""
    with Stack(podman, profiles=("dev",)) as stack:
        wait_for(
            lambda: stack.healthy(DEV_SERVICES),
            timeout=HEALTHY_TIMEOUT,
            interval=1.0,
            what="every dev service to be healthy",
        )
        yield stack
        stack.save_logs(LOGS_DIR / stack.project)


#: The public profile's services the tests start, and how many of each.
#: cloudflared is not started: it dials Cloudflare, which no test reaches.
PUBLIC_SERVICES = {"valkey": 1, "app": 3, "gateway-public": 1}
#: Where the nodes fetch the test's JWKS: a container on the stack's own
#: frontend network, under the name `jwks` (see `access_jwks`).
JWKS_URL = f"http://jwks:8080/{CERTS_PATH}"


@pytest.fixture(scope="module")
def access_team() -> AccessTeam:
    """A stand-in Cloudflare Access team with its own RSA key."""
    return AccessTeam.new()


@pytest.fixture(scope="module")
def public_stack(podman, access_team):
    """The public profile (``make public``) without the tunnel: Valkey, three
    app replicas checking Access, and the TLS gateway with certificates from
    ``python -m wizard.certs`` (what ``make certs`` runs), mounted over
    ops/nginx/certs/ and published on a loopback port. The JWKS is served by
    a container on the stack's frontend network, where the nodes fetch it."""
    env = {
        "WIZARD_ACCESS_TEAM_DOMAIN": access_team.domain,
        "WIZARD_ACCESS_AUD": access_team.audience,
        "WIZARD_TEST_JWKS_URL": JWKS_URL,
    }
    stack = Stack(podman, profiles=("public",), services=tuple(PUBLIC_SERVICES), env=env)
    stack.certs.mkdir(parents=True)
    paths = make_certs(stack.certs)
    # Read through the group compose adds (WIZARD_SECRETS_GID), as `make public` sets it.
    paths.key.chmod(0o640)
    with stack:
        serve_jwks(stack, access_team)
        wait_for(
            lambda: stack.healthy(PUBLIC_SERVICES),
            timeout=HEALTHY_TIMEOUT,
            interval=1.0,
            what="every public service to be healthy",
        )
        yield stack
        stack.save_logs(LOGS_DIR / stack.project)


def serve_jwks(stack: Stack, team: AccessTeam) -> None:
    """Run ``python -m http.server`` (the app image) on the stack's frontend
    network as `jwks`, serving the team's JWKS at JWKS_URL. It carries the
    project's label, so the stack's teardown removes it with the rest."""
    folder = stack.folder / "jwks"
    team.write_jwks(folder)
    folder.chmod(0o755)
    (app,) = stack.containers("app")[:1]
    image = stack.podman.inspect(app.id)["ImageName"]
    stack.podman.run(
        "run", "--detach", "--rm", "--init",
        "--name", f"{stack.project}_jwks",
        "--label", f"{PROJECT_LABEL}={stack.project}",
        "--network", stack.network("frontend"), "--network-alias", "jwks",
        "--volume", f"{folder}:/srv:ro",
        image, "python", "-m", "http.server", "8080", "--directory", "/srv",
    )  # fmt: skip
