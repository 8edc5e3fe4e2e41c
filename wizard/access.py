"""Access: verify Cloudflare Access at the origin (defence in depth).

In the public deployment every request has passed Cloudflare Access, which
adds a signed JSON Web Token (RFC 7519) to it as the ``Cf-Access-Jwt-Assertion``
header. cloudflared may check it too, but only for a locally configured
tunnel; a node that trusts "there is a header" lets in anyone who reaches the
origin another way. So each node checks the token itself::

    browser ─► Cloudflare Access (login) ─► tunnel ─► nginx ─► node
                  signs a JWT (RS256)                      verifies it here

A token is accepted only if all of these hold (RFC 7519 §7.2, RFC 7515):

- its header names ``alg: RS256`` and a ``kid`` found in the team's JSON Web
  Key Set (``https://<team>.cloudflareaccess.com/cdn-cgi/access/certs``);
  ``none``, HS256 and every other algorithm are refused before any key is
  used, so a token "signed" with the public key as an HMAC secret fails;
- the RS256 signature verifies with that key (so no byte was changed);
- ``aud`` contains the application's AUD tag, ``iss`` is the team's URL;
- ``exp`` is in the future and ``nbf`` in the past, give or take LEEWAY.

The key set is fetched once and cached. A token whose ``kid`` is unknown
(Cloudflare rotated its keys) triggers one refetch, but at most one per
REFETCH_INTERVAL, so a flood of made-up ``kid``s cannot turn the node into a
flood of requests to Cloudflare::

    >>> verifier = AccessVerifier(AccessPolicy.for_team("myteam", "4714c1..."))  # doctest: +SKIP
    >>> verifier.identity(token)                                                 # doctest: +SKIP
    'ada@example.com'

The JWT work itself is PyJWT's (the ``public`` extra), never our own code;
this module decides only what to ask of it. PyJWT is imported when a
verifier is built, so a node without Access configured runs without it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

#: The request header Cloudflare Access adds (the cookie CF_Authorization
#: carries the same token but is sent by the browser, never trusted alone).
HEADER = "Cf-Access-Jwt-Assertion"

#: The only signature algorithm Cloudflare Access uses.
ALGORITHM = "RS256"

#: Clock difference tolerated on exp and nbf, seconds.
LEEWAY = 30.0

#: Shortest time between two key-set fetches caused by an unknown kid, seconds.
REFETCH_INTERVAL = 60.0

#: How long one key-set fetch may take, seconds.
FETCH_TIMEOUT = 5.0

#: After a failed fetch with no keys cached, requests are answered 503 for
#: this long without trying again, seconds (no fetch storm while the team's
#: URL is unreachable).
FAILURE_PAUSE = 5.0

#: Paths served without a token: the orchestrator's probes, which carry none.
OPEN_PATHS = frozenset({"/healthz", "/readyz"})


class Denied(Exception):
    """Raised when a request carries no valid Access token; the message says
    why, in one sentence fit for a 403 problem document."""


class KeysUnavailable(Exception):
    """Raised when the team's key set cannot be fetched, so no token can be
    checked right now (answered as 503, not 403: the client did nothing wrong)."""


@dataclass(frozen=True)
class AccessPolicy:
    """What a valid token must say: issuer (the team's URL), audience (the
    Access application's AUD tag), and where the team's keys are."""

    issuer: str
    audience: str
    jwks_url: str

    @classmethod
    def for_team(cls, team_domain: str, audience: str, jwks_url: str = "") -> AccessPolicy:
        """The policy of a Cloudflare Zero Trust team.

        ``team_domain`` is ``myteam`` or ``myteam.cloudflareaccess.com``;
        ``jwks_url`` overrides the team's certs URL (tests serve their own).
        """
        host = team_domain.strip().removeprefix("https://").rstrip("/")
        if "." not in host:
            host += ".cloudflareaccess.com"
        issuer = f"https://{host}"
        return cls(issuer, audience.strip(), jwks_url or f"{issuer}/cdn-cgi/access/certs")


class AccessVerifier:
    """Checks Access tokens against one :class:`AccessPolicy`; thread-safe
    (one per API process, shared by its request threads).

    ``clock`` is a monotonic clock in seconds, replaceable in tests to pass
    a minute without waiting one.
    """

    def __init__(
        self, policy: AccessPolicy, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        import jwt  # the `public` extra; imported only when Access is on

        self.jwt = jwt
        self.policy = policy
        self.clock = clock
        # lifespan: the whole set is also refetched every 5 minutes, so a key
        # Cloudflare has revoked stops verifying soon even without a new kid.
        self.keys = jwt.PyJWKClient(
            policy.jwks_url, cache_keys=False, lifespan=300, timeout=FETCH_TIMEOUT
        )
        self.lock = threading.Lock()
        self.last_refetch = -REFETCH_INTERVAL
        self.failed_at = -FAILURE_PAUSE

    def identity(self, token: str) -> str:
        """The verified identity in ``token``: its ``email`` (a person), else
        ``common_name`` (a service token), else ``sub``.

        Raises:
            Denied: missing, malformed, wrongly signed, expired, not yet
                valid, or meant for another audience or issuer.
            KeysUnavailable: the key set could not be fetched.
        """
        if not token:
            raise Denied(f"send the {HEADER} header that Cloudflare Access adds")
        key = self._key_for(self._header(token))
        try:
            claims = self.jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self.policy.audience,
                issuer=self.policy.issuer,
                leeway=LEEWAY,
                options={"require": ["exp", "iss", "aud"]},
            )
        except self.jwt.InvalidTokenError as error:
            # Bad signature, expired, not yet valid, wrong aud or iss.
            raise Denied(f"the Access token is not valid: {error}") from None
        who = claims.get("email") or claims.get("common_name") or claims.get("sub")
        if not who:
            raise Denied("the Access token names nobody (no email, common_name or sub)")
        return str(who)

    def _header(self, token: str) -> dict:
        """The token's JOSE header, read before any signature check only to
        pick the key; refuses every algorithm but RS256 here."""
        try:
            header = self.jwt.get_unverified_header(token)
        except self.jwt.DecodeError:
            # Not three base64url parts with a JSON header.
            raise Denied("the Access token is not a JSON Web Token") from None
        if header.get("alg") != ALGORITHM:
            raise Denied(f"the Access token must be signed with {ALGORITHM}")
        if not isinstance(header.get("kid"), str):
            raise Denied("the Access token names no key (kid)")
        return header

    def _key_for(self, header: dict):
        """The public key named by ``header['kid']``, refetching the key set
        once if it is unknown and no refetch happened in REFETCH_INTERVAL."""
        kid = header["kid"]
        key = self._find(kid, refresh=False)
        if key is not None:
            return key
        with self.lock:
            now = self.clock()
            if now - self.last_refetch < REFETCH_INTERVAL:
                raise Denied("the Access token was signed with an unknown key")
            self.last_refetch = now
        log.info("unknown Access key id; fetching the key set again", extra={"reason": kid})
        key = self._find(kid, refresh=True)
        if key is None:
            raise Denied("the Access token was signed with an unknown key")
        return key

    def _find(self, kid: str, *, refresh: bool):
        """The key ``kid`` of the cached key set (fetched if none is cached,
        or if ``refresh``), or None.

        Raises:
            KeysUnavailable: the fetch failed, or failed less than
                FAILURE_PAUSE ago with nothing cached.
        """
        if not refresh and self.clock() - self.failed_at < FAILURE_PAUSE:
            raise KeysUnavailable("the Access keys could not be fetched a moment ago")
        try:
            jwk_set = self.keys.get_jwk_set(refresh=refresh)
        except (self.jwt.PyJWKClientError, self.jwt.PyJWKSetError) as error:
            # Unreachable, or not a key set: nothing can be verified now.
            if not refresh:
                self.failed_at = self.clock()
            raise KeysUnavailable(f"cannot fetch the Access keys ({error})") from None
        for jwk in jwk_set.keys:
            if jwk.key_id == kid:
                return jwk.key
        return None


def token_of(environ: dict) -> str:
    """The Access token of a WSGI request: the header only, never the
    ``CF_Authorization`` cookie (a cookie rides along on cross-site requests)."""
    return environ.get("HTTP_CF_ACCESS_JWT_ASSERTION", "").strip()
