"""Harness of the network lab: the cluster spread over Linux network
namespaces (wizard/netlab.py), loaded through its gateway host from this
machine, faults injected on its bridge (a host's port down, ebtables rules)
and by a relay that delays Valkey's replies (wizard/slowlink.py).

Everything a test creates (namespaces, links, processes) is removed by the
``start_lab`` fixture's finalizer, even when the test fails; the finalizer
then checks that nothing is left. What each scenario measured goes to
``var/netlab-results.json``; ``python -m tests.render_results`` turns the
files of several runs into the tables of docs/netlab.md.
"""

from __future__ import annotations

import os

import pytest

from tests.chaos.conftest import Chaos
from tests.support import results_reporter
from wizard.cluster import ROOT
from wizard.netlab import LabCluster, Network

#: What each scenario measured, by scenario name.
RESULTS: dict[str, dict] = {}

pytestmark = pytest.mark.chaos


report_results = results_reporter(ROOT / "var" / "netlab-results.json", RESULTS, "network lab")


@pytest.fixture
def start_lab(tmp_path):
    """Build a lab network and start a LabCluster on it with extra node
    settings; everything is stopped and removed after the test."""
    # One /24 per process, so two test runs never share a lab.
    # 50-219: never make netlab's own lab (DEFAULT_LAB_ID, 42) nor the
    # lab-script tests' 220-249, so a test never deletes a running lab.
    network = Network(lab_id=50 + os.getpid() % 170)
    started: list[LabCluster] = []

    def start(nodes=3, workers=1, ha=False, slow_valkey=False, **env):
        settings = {
            "WIZARD_WORK_SECONDS": "0",
            "WIZARD_LEASE_SECONDS": "1.5",
            "WIZARD_BLOCK_SECONDS": "0.2",
            "WIZARD_RETRY_BASE_SECONDS": "0.2",
            "WIZARD_GRACE_SECONDS": "5",
            **{key: str(value) for key, value in env.items()},
        }
        network.create()
        cluster = LabCluster(
            network,
            nodes=nodes,
            workers=workers,
            var_dir=tmp_path / "var",
            node_env=settings,
            ha=ha,
            slow_valkey=slow_valkey,
            # The bursts come from one address, far above the gateway's
            # per-address limits, which tests/edge checks on their own.
            gateway_limits=False,
        )
        started.append(cluster)
        cluster.start()
        return Chaos(cluster)

    try:
        yield start
    finally:
        for cluster in started:
            cluster.stop()
        network.destroy()
    for cluster in started:
        assert cluster.pids() == [], "a process of the lab is still running"
    assert network.namespaces() == [], "a namespace of the lab is left"
