"""One real local cluster for the edge tests: a real Valkey, two nodes and
the real nginx gateway with its per-address limits on (as `make run`,
compose and Kubernetes run it). Every test takes fresh source addresses
(tests/edge/gateway.py: new_address), so no test spends another's budget.

What a node believes about the client (it trusts X-Forwarded-For only from
WIZARD_TRUSTED_PROXIES) is the node's side, tested with the node; here the
gateway's own record of each request (its JSON access log: ``remote``, the
address it counted and forwarded) is the evidence.
"""

from __future__ import annotations

import pytest

from wizard.cluster import LocalCluster, free_port

#: The nodes' settings: no simulated work.
NODE_ENV = {"WIZARD_WORK_SECONDS": "0"}


@pytest.fixture(scope="package")
def cluster(tmp_path_factory):
    """Valkey, two nodes (one worker each) and nginx with its limits on, on
    free ports; stopped by PID after the package."""
    local = LocalCluster(
        gateway_port=free_port(),
        nodes=2,
        workers=1,
        var_dir=tmp_path_factory.mktemp("edge"),
        node_env=NODE_ENV,
    )
    with local:
        yield local
