"""The dashboard stays honest under stress, in a real Chromium against a
real cluster whose nodes limit each client to 1 task a second (bursts of 5):
a burst over the limit is summed up in one line per kind of outcome, and a
frozen Valkey (SIGSTOP) turns the node cards stale with one short banner
line, until it thaws (SIGCONT).

This module starts its own cluster (the rate limit would get in the way of
the other browser tests).
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterator

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import start_cluster
from wizard.cluster import LocalCluster

#: Tasks per second and burst allowed to each client by the nodes.
RATE, BURST = 1, 5


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[LocalCluster]:
    """The browser tests' cluster, with a rate limit on the work routes."""
    started = start_cluster(
        tmp_path_factory, WIZARD_RATE_LIMIT=str(RATE), WIZARD_RATE_BURST=str(BURST)
    )
    try:
        yield started
    finally:
        started.stop()
        assert started.pids() == [], "a process of the cluster is still running"


def page_errors(dashboard) -> list[str]:
    """Console errors and uncaught exceptions, less Chromium's own line for
    each refused request ("Failed to load resource: ... 429"): refusals are
    what these tests provoke."""
    return [error for error in dashboard.errors if "Failed to load resource" not in error]


def test_a_rate_limited_burst_is_summed_up_in_one_line_per_kind(dashboard):
    accepted = len(dashboard.send_burst(15, accepted=BURST))

    refused = dashboard.page.locator('#burst-grid li[data-status="refused"]').count()
    assert accepted >= BURST and refused >= 1 and accepted + refused == 15
    expect(dashboard.burst_line("sent")).to_have_text(re.compile(r"^15 sent in "))
    expect(dashboard.burst_line("accepted")).to_contain_text(f"{accepted} accepted by")
    expect(dashboard.burst_line("refused")).to_have_count(1)
    expect(dashboard.burst_line("refused")).to_contain_text(
        f"{refused} refused: too many requests (HTTP 429)"
    )
    expect(dashboard.burst_line("refused")).to_contain_text("wait 1 s")
    expect(dashboard.burst_line("failed")).to_have_count(0)
    expect(dashboard.burst_line("done")).to_be_visible(timeout=15_000)
    expect(dashboard.burst_line("finished")).to_contain_text(f"{accepted} / {accepted} finished")
    assert page_errors(dashboard) == []


def test_a_frozen_valkey_turns_the_cards_stale_with_one_short_banner(dashboard, cluster):
    nodes = dashboard.page.locator("#nodes")
    banner = dashboard.page.locator("#problem-banner")
    expect(nodes).to_have_attribute("data-stale", "false")

    valkey = cluster.valkey.pid
    os.kill(valkey, signal.SIGSTOP)
    try:
        expect(nodes).to_have_attribute("data-stale", "true")
        expect(nodes.locator(".node-state").first).to_have_text("no news")
        expect(dashboard.page.locator("#nodes-freshness")).to_contain_text("No news for")
        expect(banner).to_be_visible()
        text = banner.text_content()
    finally:
        os.kill(valkey, signal.SIGCONT)

    assert len(text) <= 200, text
    causes = text.split(": ", 1)[1].split(". ")[0].split("; ")
    assert len(causes) == len(set(causes)), f"a cause is repeated: {text}"
    expect(nodes).to_have_attribute("data-stale", "false")
    expect(banner).to_be_hidden()
    expect(nodes.locator(".node-state").first).to_have_text("up")
    assert page_errors(dashboard) == []
