"""The dashboard under its Content-Security-Policy, in Debian's Chromium:
it works with no console error (so none of its own scripts or styles is
blocked), while a script injected into the page is refused."""

from __future__ import annotations

from playwright.sync_api import expect

from tests.browser.conftest import DESKTOP
from tests.browser.dashboard import Dashboard
from wizard.router import SECURITY_HEADERS

#: What an attacker who got HTML into the page would try: an inline script.
INJECT = """() => {
    const script = document.createElement('script');
    script.textContent = 'window.injected = true';
    document.body.append(script);
}"""


def test_the_dashboard_works_under_its_csp_and_refuses_an_injected_script(browser, cluster):
    context = browser.new_context(viewport=DESKTOP)
    try:
        page = context.new_page()
        dashboard = Dashboard(page)
        response = page.goto(cluster.url + "/")
        policy = response.headers["content-security-policy"]
        assert policy == SECURITY_HEADERS["Content-Security-Policy"]
        assert response.headers["x-frame-options"] == "DENY"
        dashboard.wait_for_nodes(3)
        dashboard.wait_for_answers(4)
        expect(page.locator("#connection")).to_have_attribute("data-state", "live")
        assert dashboard.errors == [], "the dashboard itself must need no CSP exception"

        page.evaluate(INJECT)
        assert page.evaluate("() => window.injected === undefined")
        page.wait_for_function("() => true")
        assert any("Content Security Policy" in error for error in dashboard.errors), (
            dashboard.errors
        )
    finally:
        context.close()
