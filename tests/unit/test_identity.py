"""Client identity: one function decides who the client is (wizard.identity)."""

from __future__ import annotations

import pytest

from wizard.config import DEFAULT_TRUSTED_PROXIES, Settings
from wizard.identity import VERIFIED_IDENTITY, client_identity

TRUSTED = Settings(trusted_proxies=DEFAULT_TRUSTED_PROXIES).trusted_networks


def identity(**environ) -> str:
    return client_identity(environ, TRUSTED)


def test_a_direct_client_is_its_peer_address_whatever_it_claims():
    claims = {"HTTP_X_FORWARDED_FOR": "10.9.9.9", "HTTP_X_REAL_IP": "10.8.8.8"}

    assert identity(REMOTE_ADDR="203.0.113.7", **claims) == "203.0.113.7"


def test_behind_a_trusted_proxy_the_client_is_the_hop_the_proxy_appended():
    forged = "198.51.100.1, 203.0.113.7"

    assert identity(REMOTE_ADDR="10.0.0.9", HTTP_X_FORWARDED_FOR=forged) == "203.0.113.7"
    assert identity(REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="127.0.0.2") == "127.0.0.2"


def test_x_real_ip_counts_only_without_x_forwarded_for():
    assert identity(REMOTE_ADDR="172.18.0.3", HTTP_X_REAL_IP="203.0.113.7") == "203.0.113.7"
    both = {"HTTP_X_REAL_IP": "198.51.100.1", "HTTP_X_FORWARDED_FOR": "203.0.113.7"}
    assert identity(REMOTE_ADDR="172.18.0.3", **both) == "203.0.113.7"


@pytest.mark.parametrize(
    "forwarded", ["", "not-an-address", "203.0.113.7:80", "\xe9", "1.2.3.4, ", "  "]
)
def test_a_forwarded_value_that_is_not_an_address_leaves_the_proxy_as_client(forwarded):
    assert identity(REMOTE_ADDR="10.0.0.9", HTTP_X_FORWARDED_FOR=forwarded) == "10.0.0.9"


def test_a_verified_identity_from_middleware_wins_over_addresses():
    environ = {VERIFIED_IDENTITY: "alice@example.com", "REMOTE_ADDR": "10.0.0.9"}

    assert client_identity(environ, TRUSTED) == "alice@example.com"


def test_trusting_nobody_makes_every_client_its_peer():
    environ = {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "203.0.113.7"}

    assert client_identity(environ, ()) == "127.0.0.1"


def test_ipv6_peers_and_hops_are_addresses_too():
    environ = {"REMOTE_ADDR": "::1", "HTTP_X_FORWARDED_FOR": "2001:db8::7"}

    assert client_identity(environ, TRUSTED) == "2001:db8::7"
    assert identity(REMOTE_ADDR="2001:db8::9", HTTP_X_FORWARDED_FOR="::1") == "2001:db8::9"


def test_no_peer_address_is_an_unknown_client():
    assert identity() == "unknown"
