"""The live dashboard at ``/``, in a real headless Chromium, against a real
local cluster (Valkey, three nodes, nginx). Each test is what a person would
do and see; nothing waits a guessed delay, every wait has a deadline.

Set ``DASHBOARD_SCREENSHOT=docs/dashboard.png`` to refresh the screenshot in
the docs; otherwise the photo is taken into the test's temporary folder.
"""

from __future__ import annotations

import os
import re
import signal
import struct
import time
from pathlib import Path

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import expect

from tests.browser.conftest import DESKTOP, PHONE, open_dashboard
from wizard.cluster import ROOT

#: A total time as the race prints it: "1.23 s", "12.3 s" or "2 min 5 s".
SECONDS = re.compile(r"^\d+(\.\d+)? s$|^\d+ min \d+ s$")


def png_size(path: Path) -> tuple[int, int]:
    """Width and height of a PNG, read from its IHDR chunk (PNG spec §11.2.2)."""
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", header[16:24])


def test_the_dashboard_loads_without_console_errors(dashboard):
    # Two rounds of polling at least: /cluster and /tasks each answered twice.
    dashboard.wait_for_answers(4)
    expect(dashboard.page.locator("#connection")).to_have_attribute("data-state", "live")
    expect(dashboard.page.locator("#problem-banner")).to_be_hidden()

    assert dashboard.errors == []


def test_the_queue_panel_names_the_valkey_primary_the_nodes_write_to(dashboard, cluster):
    # valkey://wizard@127.0.0.1:port/0: the server's address, not the user.
    address = cluster.valkey_url.removesuffix("/0").rpartition("@")[2]
    expect(dashboard.page.locator("#q-primary")).to_have_text(
        f"primary {address} (from VALKEY_URL), 0 replicas"
    )


def test_a_burst_can_be_sent_with_the_keyboard_alone_and_the_focus_is_visible(dashboard):
    focused = dashboard.tab_to("burst-button")

    assert focused.evaluate("button => getComputedStyle(button).outlineStyle") == "solid"
    dashboard.page.keyboard.press("Enter")
    expect(dashboard.page.locator("#burst-grid li[data-task-id]")).to_have_count(10)


def test_a_burst_of_ten_tasks_completes_on_more_than_one_worker(dashboard):
    task_ids = dashboard.send_burst(10)

    dashboard.wait_until_feed_shows(task_ids, "complete")

    workers = dashboard.feed_column(task_ids, "handled_by")
    accepted_by = dashboard.feed_column(task_ids, "accepted_by")
    assert len(set(workers)) > 1, f"every task ran on {workers[0]}"
    assert len(set(accepted_by)) > 1, f"nginx sent every POST to {accepted_by[0]}"


def test_sync_vs_async_shows_both_total_times(dashboard):
    dashboard.race(4)

    verdict = dashboard.page.locator("#race-verdict")
    expect(verdict).to_contain_text("4 tasks", timeout=20_000)
    expect(dashboard.page.locator("#race-sync-time")).to_have_text(SECONDS)
    expect(dashboard.page.locator("#race-async-time")).to_have_text(SECONDS)


def test_an_api_error_is_shown_in_the_problems_own_words(dashboard):
    result = dashboard.add_now("abc", "3")

    expect(result.locator(".error")).to_contain_text("operand 'a' must be a number")
    expect(result.locator(".error")).to_contain_text("HTTP 400")


def test_a_queued_task_is_shown_moving_to_complete_with_who_accepted_handled_and_checked(dashboard):
    progress = dashboard.queue_one_task("2", "3")

    expect(progress.locator(".step.is-done")).to_have_count(3)
    expect(progress).to_contain_text("2 + 3 = 5")
    expect(progress).to_contain_text("accepted by node-")
    expect(progress).to_contain_text("/w1")
    expect(progress).to_contain_text("status asked")


def test_the_dashboard_fits_a_375_pixel_wide_screen_without_sideways_scrolling(phone):
    task_ids = phone.send_burst(10)
    phone.wait_until_feed_shows(task_ids[-10:], "complete")
    phone.wait_for_answers(20)

    assert phone.scroll_width() <= 375


def test_a_burst_of_thirty_shows_tasks_waiting_and_finished_at_once(dashboard, tmp_path):
    expect(dashboard.add_now("20", "22")).to_contain_text("answered by")
    expect(dashboard.queue_one_task("20", "22").locator(".step.is-done")).to_have_count(3)
    dashboard.race(6)
    expect(dashboard.page.locator("#race-verdict")).to_contain_text("6 tasks", timeout=20_000)

    dashboard.send_burst(30)
    dashboard.wait_until_feed_mixes(finished=3, unfinished=3)

    target = Path(os.environ.get("DASHBOARD_SCREENSHOT") or tmp_path / "dashboard.png")
    if not target.is_absolute():
        target = ROOT / target
    dashboard.page.screenshot(path=str(target), full_page=True)
    width, height = png_size(target)
    assert width == 1280 and height > 900


def test_a_killed_node_turns_grey_within_seconds_and_regains_its_colour(dashboard, cluster):
    card = dashboard.node_card("node-3")
    expect(card).to_have_attribute("data-alive", "true")

    # The node runs in its own session: one signal to its process group kills
    # the supervisor, its API, workers and scheduler at once, like a crash.
    node = cluster.nodes["node-3"]
    os.killpg(node.pid, signal.SIGKILL)
    node.process.wait(timeout=5)
    try:
        expect(card).to_have_attribute("data-alive", "false", timeout=8_000)
        expect(card).to_have_css("filter", "grayscale(1)")
        expect(card.locator(".node-state")).to_contain_text("down")
    finally:
        cluster.start_node("node-3")
        cluster.wait_node_ready("node-3")

    expect(card).to_have_attribute("data-alive", "true")
    expect(card).not_to_have_css("filter", "grayscale(1)")


def test_every_submit_carries_its_own_idempotency_key(dashboard):
    keys = []
    for a in ("2", "3"):
        with dashboard.page.expect_request(
            lambda request: request.method == "POST" and "/task?" in request.url
        ) as sent:
            dashboard.queue_one_task(a, "1")
        keys.append(sent.value.headers.get("idempotency-key", ""))

    assert all(re.fullmatch(r"[0-9a-f]{32}", key) for key in keys), keys
    assert keys[0] != keys[1]


# --- numbers, layout, traffic, accessibility ------------------------------------

#: Sums the layout shifts not caused by input (the browser's own measure,
#: the Layout Instability API) into window.layoutShift.
MEASURE_LAYOUT_SHIFT = """
window.layoutShift = 0;
new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
        if (!entry.hadRecentInput) { window.layoutShift += entry.value; }
    }
}).observe({ type: "layout-shift", buffered: true });
"""

#: Counts every change of text in the page's live regions into window.spoken.
COUNT_ANNOUNCEMENTS = """
window.spoken = [];
document.addEventListener("DOMContentLoaded", () => {
    const live = document.querySelectorAll(
        '[aria-live]:not([aria-live="off"]), [role="status"], [role="alert"]');
    const observer = new MutationObserver((records) => {
        for (const record of records) {
            const target = record.target;
            const region = target.nodeType === 1 ? target : target.parentElement;
            const owner = region.closest('[aria-live], [role="status"], [role="alert"]');
            window.spoken.push(owner.id + ": " + owner.textContent.trim());
        }
    });
    for (const region of live) {
        observer.observe(region, { childList: true, subtree: true, characterData: true });
    }
});
"""


#: True when the chart's text names at least ``arg`` finished tasks in all.
CHART_COUNTS_AT_LEAST = """least => [...document.getElementById("chart").getAttribute("aria-label")
    .matchAll(/node-\\d+ (\\d+)/g)].reduce((sum, found) => sum + Number(found[1]), 0) >= least"""


@pytest.mark.parametrize(
    "a, b, product",
    [
        ("94906267", "94906267", "9007199515875289"),
        ("999999999999999", "999999999999997", "999999999999996000000000000003"),
    ],
)
def test_an_integer_result_of_any_size_is_shown_exactly(dashboard, a, b, product):
    progress = dashboard.queue_one_task(a, b, "multiply")

    expect(progress.locator(".step.is-done")).to_have_count(3)
    expect(progress).to_contain_text(f"{a} × {b} = {product}")
    task_id = progress.locator("code").first.text_content()
    row = dashboard.page.locator(f'#feed-rows tr[data-task-id^="{task_id}"]')
    expect(row.locator('td[data-field="operation"]')).to_contain_text(f"= {product}")


def test_loading_on_a_phone_shifts_the_layout_by_at_most_0_05(browser, cluster):
    phone = open_dashboard(browser, cluster, PHONE, init_script=MEASURE_LAYOUT_SHIFT)
    try:
        # Several rounds of polling: the cards, the answers strip and the feed are in.
        phone.wait_for_answers(8)
        expect(phone.page.locator("#feed-rows tr")).not_to_have_count(0)

        shift = phone.page.evaluate("window.layoutShift")
    finally:
        phone.page.context.close()

    assert shift <= 0.05


def test_an_idle_page_moves_less_than_100_kb_a_minute(dashboard):
    dashboard.send_burst(20)  # more tasks stored than the feed shows
    expect(dashboard.burst_line("done")).to_be_visible(timeout=20_000)
    received: list[int] = []
    page = dashboard.page

    def count(request):
        sizes = request.sizes()
        received.append(sizes["responseHeadersSize"] + sizes["responseBodySize"])

    # Idle: GET /tasks comes every 5 s once nothing has moved for a while.
    gaps = []
    last = None
    for _ in range(12):
        with page.expect_request(re.compile(r"/tasks\?"), timeout=10_000):
            pass
        now = time.monotonic()
        gaps.append(now - last if last else 0)
        last = now
        if gaps[-1] >= 4:
            break
    assert gaps[-1] >= 4, f"the page never went idle: gaps {gaps}"

    page.on("requestfinished", count)
    started = time.monotonic()
    for _ in range(3):  # three idle rounds of GET /tasks, about 15 s
        with page.expect_request(re.compile(r"/tasks\?"), timeout=10_000):
            pass
    seconds = time.monotonic() - started
    page.remove_listener("requestfinished", count)

    per_minute = sum(received) * 60 / seconds
    assert seconds >= 12 and len(received) >= 12
    assert per_minute < 100_000, f"{per_minute:.0f} bytes a minute ({len(received)} responses)"


def test_a_burst_speaks_to_screen_readers_at_its_milestones_only(browser, cluster):
    dashboard = open_dashboard(browser, cluster, DESKTOP, init_script=COUNT_ANNOUNCEMENTS)
    try:
        dashboard.page.evaluate("window.spoken = []")
        # On a machine this busy a node may answer 503 (Valkey too slow):
        # the milestones are the same, with the failures in the first one.
        dashboard.send_burst(15, accepted=1)
        expect(dashboard.burst_line("done")).to_be_visible(timeout=20_000)

        spoken = dashboard.page.evaluate("window.spoken")
    finally:
        dashboard.page.context.close()

    assert any("Burst of 15 sent" in line for line in spoken), spoken
    assert any("Burst done" in line for line in spoken), spoken
    assert len(spoken) <= 4, spoken


def test_the_chart_tells_nodes_apart_in_words_and_patterns(dashboard):
    task_ids = dashboard.send_burst(12)
    dashboard.wait_until_feed_shows(task_ids, "complete")

    chart = dashboard.page.locator("#chart")
    # The workers' counters come with their heartbeats, up to a second later.
    dashboard.page.wait_for_function(CHART_COUNTS_AT_LEAST, arg=12)
    expect(chart).to_have_attribute("aria-label", re.compile(r"node-1 \d+ \(solid bars\)"))
    expect(chart).to_have_attribute("aria-label", re.compile(r"node-2 \d+ \(stripes bars\)"))
    expect(chart).to_have_attribute("aria-label", re.compile(r"node-3 \d+ \(dots bars\)"))
    expect(dashboard.page.locator("#legend-nodes canvas.swatch")).to_have_count(3)
    expect(dashboard.page.locator("#queue-chart")).to_have_attribute(
        "aria-label", re.compile(r"waiting in the queue .*: \d+ now, at most \d+")
    )


def test_on_a_phone_the_controls_and_the_queue_they_fill_are_on_screen_together(phone):
    phone.page.locator("#burst-button").scroll_into_view_if_needed()
    phone.send_burst(10)

    assert phone.in_view("#burst-button")
    assert phone.in_view("#burst-grid")
    assert phone.in_view("#mini-status")
    expect(phone.page.locator("#mini-pending")).to_have_text(re.compile(r"^\d+$"))


def test_axe_finds_no_accessibility_violation_on_a_desktop_or_a_phone(dashboard):
    task_ids = dashboard.send_burst(6)
    dashboard.wait_until_feed_shows(task_ids, "complete")
    expect(dashboard.queue_one_task("2", "3").locator(".step.is-done")).to_have_count(3)
    axe = Axe()

    desktop = axe.run(dashboard.page)
    dashboard.page.set_viewport_size(PHONE)
    phone = axe.run(dashboard.page)

    assert desktop.violations_count == 0, desktop.generate_report()
    assert phone.violations_count == 0, phone.generate_report()


def test_the_cells_legend_explains_every_look_a_burst_cell_can_take():
    """Every state the stylesheet draws a burst cell in (outlined, filled,
    striped, crossed out) has a line in the legend beside the grid, and the
    legend names no state the cells never take."""
    css = (ROOT / "static" / "app.css").read_text()
    html = (ROOT / "static" / "index.html").read_text()
    # A cell with no status rule of its own keeps the plain .cell look: waiting.
    drawn = set(re.findall(r'\.cell\[data-status="(\w+)"\]', css)) | {"pending"}
    legend = html.split('class="legend cells-legend"')[1].split("</ul>")[0]
    explained = re.findall(r'<span class="cell" data-status="(\w+)"[^>]*></span> \S', legend)
    assert sorted(explained) == sorted(drawn)
