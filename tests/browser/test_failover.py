"""The dashboard through a failover, in a real headless Chromium: the local
cluster with a Valkey primary, two replicas and three sentinels (what
``make run HA=1`` starts). The queue panel names the primary the nodes found
through Sentinel; the primary is killed with SIGKILL, the sentinels promote
a replica, and the panel names the new one, with no node and no page
restarted. Every wait has a deadline; nothing waits a guessed delay.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import DESKTOP, open_dashboard
from wizard.cluster import LocalCluster, free_port

#: Longest wait for the panel to name the promoted replica, milliseconds:
#: a second of silence before the sentinels vote, then the nodes' next
#: reconnection and the dashboard's next poll, on a loaded machine.
FAILOVER_MS = 60_000


@pytest.fixture(scope="module")
def ha_cluster(tmp_path_factory) -> Iterator[LocalCluster]:
    """Three nodes (one worker each) and nginx in front of the HA trio."""
    cluster = LocalCluster(
        gateway_port=free_port(),
        nodes=3,
        workers=1,
        var_dir=tmp_path_factory.mktemp("ha-cluster"),
        node_env={
            "WIZARD_WORK_SECONDS": "0.2",
            "WIZARD_LEASE_SECONDS": "2",
            "WIZARD_BLOCK_SECONDS": "0.2",
        },
        ha=True,
    )
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        assert cluster.pids() == [], "a process of the cluster is still running"


@pytest.mark.timeout(300)
def test_the_queue_panel_names_the_new_primary_after_a_failover(browser, ha_cluster):
    ha = ha_cluster.ha
    old = ha.primary()
    dashboard = open_dashboard(browser, ha_cluster, DESKTOP)
    try:
        primary = dashboard.page.locator("#q-primary")
        expect(primary).to_have_text(f"primary {old.address} (found through Sentinel), 2 replicas")

        old.stop(signal.SIGKILL)
        new = ha.wait_failover(old)

        # The other replica follows the new primary; the dead one is gone.
        expect(primary).to_have_text(
            f"primary {new.address} (found through Sentinel), 1 replica", timeout=FAILOVER_MS
        )
        # The page kept running: the nodes answer again, all three drawn.
        dashboard.wait_for_nodes(3)
        expect(dashboard.page.locator("#connection")).to_have_attribute("data-state", "live")
    finally:
        dashboard.page.context.close()
