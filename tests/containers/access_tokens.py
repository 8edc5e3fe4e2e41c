"""Cloudflare Access tokens made by the container tests, and the JWKS that
verifies them, so the public profile's Access check runs without Cloudflare.

Access signs an RS256 JWT per request (``Cf-Access-Jwt-Assertion``) with
keys it publishes as a JSON Web Key Set (RFC 7517) at
``https://<team>.cloudflareaccess.com/cdn-cgi/access/certs``. Here a fresh
RSA key stands in for the team's; the nodes are pointed at a JWKS the test
serves on the stack's own network (``WIZARD_ACCESS_JWKS_URL``)::

    team = AccessTeam.new()
    team.write_jwks(folder)            # folder/cdn-cgi/access/certs
    team.token()                       # valid for five minutes
    team.token(aud="someone-else")     # any claim overridden
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

#: Where Access publishes a team's keys, relative to the team's URL.
CERTS_PATH = "cdn-cgi/access/certs"
#: How long a token made here is valid, seconds.
LIFETIME = 300


@dataclass(frozen=True)
class AccessTeam:
    """A stand-in Access team: its domain, an application's AUD tag, and
    the RSA key (2048 bits) with its key id."""

    domain: str
    audience: str
    key: rsa.RSAPrivateKey
    kid: str

    @classmethod
    def new(cls) -> AccessTeam:
        """A team with a random name, AUD tag and key."""
        name = "wizard-test-" + secrets.token_hex(4)
        return cls(
            domain=f"{name}.cloudflareaccess.com",
            audience=secrets.token_hex(32),
            key=rsa.generate_private_key(public_exponent=65537, key_size=2048),
            kid=secrets.token_hex(8),
        )

    @property
    def issuer(self) -> str:
        return f"https://{self.domain}"

    def jwks(self) -> dict:
        """The public half as a JWKS: ``{"keys": [JWK]}``."""
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        return {"keys": [{**public, "kid": self.kid, "alg": "RS256", "use": "sig"}]}

    def write_jwks(self, folder: Path) -> Path:
        """Write the JWKS to ``folder/cdn-cgi/access/certs``; returns that path."""
        path = folder / CERTS_PATH
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.jwks()))
        return path

    def token(self, key: rsa.RSAPrivateKey | None = None, **claims) -> str:
        """An RS256 token as Access would sign it, for ``tester@example.com``;
        ``claims`` replace or add claims, ``key`` signs instead of the team's."""
        now = int(time.time())
        body = {
            "aud": [self.audience],
            "iss": self.issuer,
            "email": "tester@example.com",
            "sub": "tester",
            "iat": now,
            "nbf": now,
            "exp": now + LIFETIME,
            **claims,
        }
        return jwt.encode(body, key or self.key, algorithm="RS256", headers={"kid": self.kid})
