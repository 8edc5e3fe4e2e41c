"""Fixtures of the container tests: podman with this folder's settings and
every image built (or kept from an earlier run), and one compose stack per
test module, brought up under a project name of its own and taken down at
the end of the module, whatever happened in between.

These tests run only when asked for (``make containers-test``, or
``pytest tests/containers``): see setup.cfg's ``norecursedirs``.
"""

from __future__ import annotations

import pytest

from tests.containers.engine import Podman, Stack
from tests.containers.images import CACHE_DIR, ensure_images
from tests.support import wait_for

#: The dev profile's services and how many healthy containers each must have.
DEV_SERVICES = {"valkey": 1, "app": 3, "gateway": 1}
#: Longest wait for a stack to become healthy, seconds (first start, slow machine).
HEALTHY_TIMEOUT = 180.0
#: Where each stack's container logs are written before it is taken down.
LOGS_DIR = CACHE_DIR / "logs"


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
    with Stack(podman) as stack:
        wait_for(
            lambda: stack.healthy(DEV_SERVICES),
            timeout=HEALTHY_TIMEOUT,
            interval=1.0,
            what="every dev service to be healthy",
        )
        yield stack
        stack.save_logs(LOGS_DIR / stack.project)
