"""The dashboard as the tests see it: what a person would press and read.

A page object (one method per thing a user does or looks at), so the tests
read as the behaviour they check and the CSS selectors live in one place::

    >>> dashboard.send_burst(10)                          # doctest: +SKIP
    >>> dashboard.wait_until_feed_shows(ids, "complete")  # doctest: +SKIP
"""

from __future__ import annotations

from playwright.sync_api import ConsoleMessage, Error, Locator, Page, expect

# JavaScript run in the page by the waits below (Playwright passes `arg`).

#: True when every task id is a feed row with the given status.
FEED_SHOWS = """([ids, status]) => ids.every(id => document.querySelector(
    `#feed-rows tr[data-task-id="${id}"][data-status="${status}"]`))"""

#: True when the feed shows enough finished and unfinished tasks at once.
FEED_MIXES = """([finished, unfinished]) => {
    const rows = (status) =>
        document.querySelectorAll(`#feed-rows tr[data-status="${status}"]`).length;
    return rows("complete") >= finished && rows("pending") + rows("running") >= unfinished;
}"""

#: The text of one column in the rows of the given task ids.
FEED_COLUMN = """([ids, field]) => ids.map(id => document.querySelector(
    `#feed-rows tr[data-task-id="${id}"] td[data-field="${field}"]`).textContent.trim())"""


#: True when the element's box lies within the window (scrolled as it is).
IN_VIEW = """selector => {
    const box = document.querySelector(selector).getBoundingClientRect();
    return box.height > 0 && box.top >= 0 && box.bottom <= window.innerHeight;
}"""


class Dashboard:
    """One open dashboard page; collects console errors and uncaught
    exceptions from the moment it is created (``errors``: list of str)."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.errors: list[str] = []
        page.on("console", self._on_console)
        page.on("pageerror", self._on_page_error)

    def _on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"console: {message.text}")

    def _on_page_error(self, error: Error) -> None:
        self.errors.append(f"uncaught: {error}")

    # --- the cluster -------------------------------------------------------

    def node_card(self, node: str) -> Locator:
        """The card of ``node`` ("node-3") in the cluster panel."""
        return self.page.locator(f'#nodes li[data-node="{node}"]')

    def wait_for_nodes(self, count: int) -> None:
        """Wait until ``count`` node cards are drawn, all of them up."""
        expect(self.page.locator('#nodes li[data-node][data-alive="true"]')).to_have_count(count)

    def wait_for_answers(self, count: int) -> None:
        """Wait until the round-robin strip shows ``count`` answers."""
        self.page.wait_for_function(
            "count => document.querySelectorAll('#answers li').length >= count", arg=count
        )

    # --- the controls ------------------------------------------------------

    def add_now(self, a: str, b: str) -> Locator:
        """Press "Add now" (GET /add) with ``a`` and ``b``; returns the result area."""
        self.page.fill("#one-a", a)
        self.page.fill("#one-b", b)
        self.page.click("#sync-button")
        return self.page.locator("#sync-result")

    def queue_one_task(self, a: str, b: str, operation: str = "add") -> Locator:
        """Press "Queue a task" (POST /task); returns the progress area."""
        self.page.fill("#one-a", a)
        self.page.fill("#one-b", b)
        self.page.select_option("#one-operation", operation)
        self.page.click("#task-button")
        return self.page.locator("#async-result")

    def tab_to(self, element_id: str, most_presses: int = 20) -> Locator:
        """Press Tab until the element with ``element_id`` has the focus.

        Raises:
            AssertionError: it was not reached in ``most_presses`` presses.
        """
        for _ in range(most_presses):
            self.page.keyboard.press("Tab")
            if self.page.evaluate("document.activeElement.id") == element_id:
                return self.page.locator(f"#{element_id}")
        raise AssertionError(f"#{element_id} never got the focus in {most_presses} presses of Tab")

    def send_burst(self, count: int, accepted: int | None = None) -> list[str]:
        """Send a burst of ``count`` tasks; returns the ids of the accepted
        ones once all requests have an answer (all ``count`` unless told)."""
        self.page.fill("#burst-count", str(count))
        self.page.click("#burst-button")
        expect(self.page.locator("#burst-grid li")).to_have_count(count)
        cells = self.page.locator("#burst-grid li[data-task-id]")
        if accepted is None:
            expect(cells).to_have_count(count)
        return cells.evaluate_all("cells => cells.map(cell => cell.dataset.taskId)")

    def burst_line(self, kind: str) -> Locator:
        """The burst summary's line for ``kind``: sent, accepted, refused,
        failed, finished or done."""
        return self.page.locator(f'#burst-summary [data-line="{kind}"]')

    def count_burst_cells(self, status: str) -> int:
        """How many cells of the burst show ``status``."""
        return self.page.locator(f'#burst-grid li[data-status="{status}"]').count()

    def race(self, count: int) -> None:
        """Start "sync vs async" with ``count`` tasks on each side."""
        self.page.fill("#race-count", str(count))
        self.page.click("#race-button")

    # --- the feed ------------------------------------------------------------

    def wait_until_feed_shows(self, task_ids: list[str], status: str) -> None:
        """Wait (15 s at most) until every task of ``task_ids`` is a feed row with ``status``."""
        self.page.wait_for_function(FEED_SHOWS, arg=[task_ids, status], timeout=15_000)

    def wait_until_feed_mixes(self, finished: int, unfinished: int) -> None:
        """Wait until the feed shows at least ``finished`` complete tasks and
        ``unfinished`` pending or running ones at the same time."""
        self.page.wait_for_function(FEED_MIXES, arg=[finished, unfinished])

    def feed_column(self, task_ids: list[str], field: str) -> list[str]:
        """The text of column ``field`` ("handled_by"...) in the rows of ``task_ids``."""
        return self.page.evaluate(FEED_COLUMN, [task_ids, field])

    # --- the page as a whole ----------------------------------------------

    def in_view(self, selector: str) -> bool:
        """True if the element is wholly inside the window as it is scrolled now."""
        return self.page.evaluate(IN_VIEW, selector)

    def scroll_width(self) -> int:
        """The page's full width in CSS pixels (more than the window = sideways scroll)."""
        return self.page.evaluate("document.scrollingElement.scrollWidth")
