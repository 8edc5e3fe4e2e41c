"""Fixtures of the browser tests: a real local cluster (Valkey, three nodes
with one worker each, nginx on a free port) and Debian's Chromium driven by
Playwright's sync API. Both are started once per module and stopped by the
fixtures, whatever the tests did.

The nodes work 0.2 s per task (fast tests, yet slow enough to watch tasks
wait and run) and hold 2 s leases, so a killed node's heartbeats expire
within 2 s and the dashboard greys it out soon after.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.browser.dashboard import Dashboard
from wizard.cluster import LocalCluster, free_port

#: Debian's Chromium (``make chromium`` installs it). Never Playwright's own download.
CHROMIUM = Path("/usr/bin/chromium")

#: Headless, no sandbox (we may run as root in a container), nothing talking
#: to the internet: no QUIC, no component updates, no sync, no first-run pages.
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

#: The desktop window of most tests, CSS pixels.
DESKTOP = {"width": 1280, "height": 900}

#: Longest wait for any one expectation on the page, milliseconds.
EXPECT_TIMEOUT_MS = 10_000


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[LocalCluster]:
    """Valkey + three nodes (one worker each) + nginx, on free local ports."""
    cluster = start_cluster(tmp_path_factory)
    try:
        yield cluster
    finally:
        cluster.stop()
        assert cluster.pids() == [], "a process of the cluster is still running"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, headless, launched by Playwright and closed after."""
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: run `make chromium` (Debian's chromium)"
    # expect() has its own default timeout (5 s), separate from the context's.
    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    playwright = sync_playwright().start()
    try:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
    finally:
        playwright.stop()


#: The window of a small phone, CSS pixels.
PHONE = {"width": 375, "height": 812}


def start_cluster(tmp_path_factory, **extra_env: str) -> LocalCluster:
    """Valkey + three nodes (one worker each) + nginx on free local ports,
    started; ``extra_env`` adds settings to every node."""
    cluster = LocalCluster(
        gateway_port=free_port(),
        nodes=3,
        workers=1,
        var_dir=tmp_path_factory.mktemp("cluster"),
        node_env={
            "WIZARD_WORK_SECONDS": "0.2",
            "WIZARD_LEASE_SECONDS": "2",
            "WIZARD_BLOCK_SECONDS": "0.2",
            **extra_env,
        },
    )
    cluster.start()
    return cluster


def open_dashboard(
    browser: Browser, cluster: LocalCluster, viewport: dict, init_script: str = ""
) -> Dashboard:
    """A new browser context (no shared cache or cookies) showing the
    dashboard at ``viewport``, once it has drawn the three nodes. Console
    errors and uncaught exceptions are collected from the first byte.
    ``init_script`` runs in the page before any of its own scripts."""
    context = browser.new_context(viewport=viewport)
    context.set_default_timeout(EXPECT_TIMEOUT_MS)
    if init_script:
        context.add_init_script(init_script)
    page: Page = context.new_page()
    dashboard = Dashboard(page)
    page.goto(cluster.url + "/")
    dashboard.wait_for_nodes(3)
    return dashboard


@pytest.fixture
def dashboard(browser, cluster) -> Iterator[Dashboard]:
    """The dashboard on a desktop-sized window; its context closed after."""
    opened = open_dashboard(browser, cluster, DESKTOP)
    try:
        yield opened
    finally:
        opened.page.context.close()


@pytest.fixture
def phone(browser, cluster) -> Iterator[Dashboard]:
    """The dashboard on a 375 px wide window (a small phone)."""
    opened = open_dashboard(browser, cluster, PHONE)
    try:
        yield opened
    finally:
        opened.page.context.close()
