"""Security headers on every answer, dev and public: from a node reached
directly, through the real nginx gateway, and on the answers nginx makes
itself; each header exactly once, with the same value everywhere."""

from __future__ import annotations

import re

import requests

from tests.ops.conftest import OPS
from wizard.router import SECURITY_HEADERS


def assert_secured(response: requests.Response) -> None:
    for name, value in SECURITY_HEADERS.items():
        # requests joins a repeated header with ", ": equality means "once".
        assert response.headers.get(name) == value, (name, response.status_code)


def test_nginx_sends_the_same_values_as_the_nodes():
    text = (OPS / "nginx" / "security-headers.conf").read_text()
    added = dict(re.findall(r'^add_header (\S+) "([^"]*)" always;', text, re.M))
    hidden = re.findall(r"^proxy_hide_header (\S+);", text, re.M)
    assert added == SECURITY_HEADERS
    assert sorted(hidden) == sorted(SECURITY_HEADERS)


def test_the_csp_forbids_inline_scripts_and_framing():
    policy = SECURITY_HEADERS["Content-Security-Policy"]
    assert "default-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy


def test_a_node_reached_directly_sends_them(cluster):
    for path in ("/", "/whoami", "/static/app.js", "/tasks/nope/status"):
        assert_secured(requests.get(cluster.node_url("node-1") + path, timeout=10))


def test_the_gateway_sends_each_once_on_proxied_answers(cluster):
    for path in ("/", "/whoami", "/nowhere"):
        assert_secured(requests.get(cluster.url + path, timeout=10))


def test_the_gateway_sends_them_on_its_own_error_pages(cluster):
    too_large = requests.post(cluster.url + "/task", data=b"x" * 200_000, timeout=10)
    assert too_large.status_code == 413
    assert too_large.json()["handled_by"] == "gateway"
    assert_secured(too_large)
    too_long = requests.get(cluster.url + "/" + "a" * 20_000, timeout=10)
    assert too_long.status_code == 414
    assert_secured(too_long)
