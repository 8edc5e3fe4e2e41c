"""Cloudflare Access verified at the origin: the matrix of tokens an attacker
(or a clock) can produce, against a key set served on 127.0.0.1 from keys
made here. Each request goes through the node's real WSGI app."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import logging
import subprocess
import sys
import time

import jwt
import pytest

from tests.access_keys import AUD, EMAIL, TEAM, KeySet, b64, claims, sign, unsigned
from tests.support import call
from wizard import access
from wizard.api import make_app
from wizard.config import ConfigError, Settings


@pytest.fixture
def keyset():
    keys = KeySet()
    keys.thread.start()
    yield keys
    keys.server.shutdown()
    keys.server.server_close()


@pytest.fixture
def kid(keyset) -> str:
    return keyset.add_key()


@pytest.fixture
def app(settings, keyset, kid):
    guarded = dataclasses.replace(
        settings, access_team_domain=TEAM, access_aud=AUD, access_jwks_url=keyset.url
    )
    return make_app(guarded)


def get(app, path: str, token: str | None = None, **headers: str):
    if token is not None:
        headers["Cf-Access-Jwt-Assertion"] = token
    return call(app, "GET", path, headers=headers)


def assert_refused(response, words: str) -> None:
    assert response.status == 403
    assert response.headers["Content-Type"] == "application/problem+json"
    assert words.lower() in response.json()["detail"].lower()


def test_a_valid_token_lets_the_request_through(app, keyset, kid):
    response = get(app, "/dead_letters", sign(keyset, kid))
    assert response.status == 200


def test_an_expired_token_is_refused(app, keyset, kid):
    past = int(time.time()) - 3600
    token = sign(keyset, kid, iat=past, nbf=past, exp=past + 60)
    assert_refused(get(app, "/dead_letters", token), "expired")


def test_a_token_within_the_clock_leeway_is_accepted(app, keyset, kid):
    token = sign(keyset, kid, exp=int(time.time()) - 5)
    assert get(app, "/whoami", token).status == 200


def test_a_token_not_yet_valid_is_refused(app, keyset, kid):
    future = int(time.time()) + 3600
    token = sign(keyset, kid, nbf=future, exp=future + 600)
    assert_refused(get(app, "/dead_letters", token), "not yet valid")


def test_a_token_for_another_application_is_refused(app, keyset, kid):
    token = sign(keyset, kid, aud=["another-application-aud"])
    assert_refused(get(app, "/dead_letters", token), "audience")


def test_a_token_from_another_team_is_refused(app, keyset, kid):
    token = sign(keyset, kid, iss="https://evil.cloudflareaccess.com")
    assert_refused(get(app, "/dead_letters", token), "issuer")


def test_a_token_without_an_expiry_is_refused(app, keyset, kid):
    token = sign(keyset, kid, exp=None)
    assert_refused(get(app, "/dead_letters", token), "exp")


def test_an_unsigned_alg_none_token_is_refused(app, kid):
    token = unsigned({"alg": "none", "kid": kid, "typ": "JWT"}, claims())
    assert_refused(get(app, "/dead_letters", token), "RS256")


def test_an_hs256_token_signed_with_the_public_key_is_refused(app, keyset, kid):
    header, payload = {"alg": "HS256", "kid": kid, "typ": "JWT"}, claims()
    head = unsigned(header, payload).rsplit(".", 1)[0]
    mac = hmac.new(keyset.public_pem(kid), head.encode(), hashlib.sha256).digest()
    assert_refused(get(app, "/dead_letters", head + "." + b64(mac)), "RS256")


def test_a_tampered_payload_is_refused(app, keyset, kid):
    header, _, signature = sign(keyset, kid).split(".")
    forged = b64(json.dumps(claims(email="mallory@example.com")).encode())
    assert_refused(get(app, "/dead_letters", f"{header}.{forged}.{signature}"), "signature")


def test_garbage_in_the_header_is_refused(app):
    assert_refused(get(app, "/dead_letters", "x"), "not a JSON Web Token")


def test_a_missing_header_is_refused(app):
    assert_refused(get(app, "/dead_letters"), "Cf-Access-Jwt-Assertion")


def test_the_cookie_alone_is_not_enough(app, keyset, kid):
    response = get(app, "/dead_letters", Cookie=f"CF_Authorization={sign(keyset, kid)}")
    assert_refused(response, "Cf-Access-Jwt-Assertion")


def test_every_route_but_the_probes_needs_a_token(app):
    for path in ("/", "/whoami", "/tasks", "/cluster", "/metrics", "/openapi.json", "/nowhere"):
        assert get(app, path).status == 403, path
    assert get(app, "/healthz").status == 200
    assert get(app, "/readyz").status in (200, 503)
    post = call(app, "POST", "/task", query={"a": "1", "b": "2"})
    assert post.status == 403


def test_a_rotated_key_is_fetched_once_and_then_accepted(app, keyset, kid):
    assert get(app, "/whoami", sign(keyset, kid)).status == 200
    assert keyset.fetches == 1
    rotated = keyset.add_key()
    assert get(app, "/whoami", sign(keyset, rotated)).status == 200
    assert keyset.fetches == 2
    assert get(app, "/whoami", sign(keyset, rotated)).status == 200
    assert keyset.fetches == 2


def test_a_flood_of_unknown_kids_fetches_the_keys_at_most_once_a_minute(app, keyset, kid):
    now = [1000.0]
    app.access.clock = lambda: now[0]
    assert get(app, "/whoami", sign(keyset, kid)).status == 200
    strangers = KeySet()
    strangers.server.server_close()
    forged = [strangers.add_key() for _ in range(3)]
    for n in range(60):
        stranger = forged[n % len(forged)]
        token = jwt.encode(claims(), strangers.keys[stranger], "RS256", headers={"kid": stranger})
        assert_refused(get(app, "/whoami", token), "unknown key")
        now[0] += 0.5
    assert keyset.fetches == 2, "one initial fetch and one refetch in the minute"
    now[0] += 31
    assert_refused(get(app, "/whoami", unsigned_kid(keyset, kid, "yet-another")), "unknown key")
    assert keyset.fetches == 3, "a minute later, one more refetch is allowed"


def unsigned_kid(keyset: KeySet, kid: str, new_kid: str) -> str:
    """A token signed with a real key but naming a kid nobody published."""
    return jwt.encode(claims(), keyset.keys[kid], "RS256", headers={"kid": new_kid})


def test_an_unreachable_key_set_is_a_503_not_a_pass(settings, kid, keyset):
    guarded = dataclasses.replace(
        settings,
        access_team_domain=TEAM,
        access_aud=AUD,
        access_jwks_url="http://127.0.0.1:9/cdn-cgi/access/certs",
    )
    response = get(make_app(guarded), "/whoami", sign(keyset, kid))
    assert response.status == 503
    assert "Retry-After" in response.headers


def test_a_failing_key_set_is_not_fetched_again_for_every_request(app, keyset, kid):
    now = [1000.0]
    app.access.clock = lambda: now[0]
    keyset.broken = True
    token = sign(keyset, kid)
    for _ in range(20):
        assert get(app, "/whoami", token).status == 503
    assert keyset.fetches == 1
    keyset.broken = False
    now[0] += 6
    assert get(app, "/whoami", token).status == 200
    assert keyset.fetches == 2


def test_the_verified_identity_is_logged_with_the_request(app, keyset, kid, caplog):
    with caplog.at_level(logging.INFO, logger="wizard.api"):
        get(app, "/whoami", sign(keyset, kid))
    lines = [r for r in caplog.records if r.getMessage() == "request"]
    assert lines[-1].identity == EMAIL


def test_a_service_token_is_known_by_its_common_name(app, keyset, kid):
    token = sign(keyset, kid, email=None, sub="", common_name="ci.access")
    assert get(app, "/whoami", token).status == 200


def test_idempotency_keys_are_scoped_to_the_verified_identity(app, keyset, kid):
    ada, bob = sign(keyset, kid), sign(keyset, kid, email="bob@example.com")

    def submit(token: str, a: str):
        headers = {"Cf-Access-Jwt-Assertion": token, "Idempotency-Key": "same-key"}
        return call(app, "POST", "/task", query={"a": a, "b": "2"}, headers=headers)

    first = submit(ada, "1")
    other = submit(bob, "5")
    again = submit(ada, "1")
    assert first.status == other.status == again.status == 202
    assert other.json()["task_id"] != first.json()["task_id"]
    assert again.json()["task_id"] == first.json()["task_id"]


def test_a_forwarded_for_header_cannot_choose_the_identity(app, keyset, kid):
    token = sign(keyset, kid)
    headers = {"Cf-Access-Jwt-Assertion": token, "X-Forwarded-For": "203.0.113.9"}
    first = call(
        app,
        "POST",
        "/task",
        query={"a": "1", "b": "2"},
        headers={**headers, "Idempotency-Key": "k1"},
    )
    spoofed = call(
        app,
        "POST",
        "/task",
        query={"a": "1", "b": "2"},
        headers={**headers, "X-Forwarded-For": "198.51.100.1", "Idempotency-Key": "k1"},
    )
    assert spoofed.json()["task_id"] == first.json()["task_id"]


def test_access_needs_both_settings():
    with pytest.raises(ConfigError, match="WIZARD_ACCESS_TEAM_DOMAIN"):
        Settings.from_env({"WIZARD_ACCESS_AUD": AUD})


def test_the_team_name_alone_gives_the_cloudflare_urls():
    policy = access.AccessPolicy.for_team("myteam", AUD)
    assert policy.issuer == "https://myteam.cloudflareaccess.com"
    assert policy.jwks_url == "https://myteam.cloudflareaccess.com/cdn-cgi/access/certs"
    assert access.AccessPolicy.for_team("myteam.cloudflareaccess.com", AUD) == policy


def test_a_node_without_access_runs_without_pyjwt():
    # sys.modules["jwt"] = None makes every `import jwt` fail, as if PyJWT
    # were not installed; the app must still build and answer.
    script = (
        "import sys; sys.modules['jwt'] = None\n"
        "from wizard.api import make_app\n"
        "from wizard.config import Settings, ConfigError\n"
        "from tests.support import call\n"
        "app = make_app(Settings())\n"
        "assert call(app, 'GET', '/healthz').status == 200\n"
        "try:\n"
        "    Settings.from_env({'WIZARD_ACCESS_TEAM_DOMAIN': 't', 'WIZARD_ACCESS_AUD': 'a'})\n"
        "except ConfigError as error:\n"
        "    print(error)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert "install the public extra" in done.stdout
