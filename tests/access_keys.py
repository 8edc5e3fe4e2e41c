"""A stand-in for a Cloudflare Zero Trust team in tests: RSA keys made on
the spot, published as a JSON Web Key Set over HTTP on 127.0.0.1 (like
``https://<team>.cloudflareaccess.com/cdn-cgi/access/certs``), and tokens
shaped like the ones Access signs."""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

TEAM = "wizard-test"
ISSUER = f"https://{TEAM}.cloudflareaccess.com"
AUD = "4714c1358e65fe4b408ad6d432a5f878f08194bdb4752441fd56faefa9b2b6f2"
EMAIL = "ada@example.com"


class KeySet:
    """A JSON Web Key Set served over HTTP on 127.0.0.1, like a team's
    /cdn-cgi/access/certs; counts every fetch."""

    def __init__(self) -> None:
        self.keys: dict[str, rsa.RSAPrivateKey] = {}
        self.fetches = 0
        #: When true, every fetch gets a 500 (Cloudflare having a bad day).
        self.broken = False
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.fetches += 1
                body = json.dumps(owner.document()).encode()
                self.send_response(500 if owner.broken else 200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/cdn-cgi/access/certs"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def add_key(self) -> str:
        """Make a new RSA key, publish it, and return its kid."""
        kid = uuid.uuid4().hex
        self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return kid

    def document(self) -> dict:
        jwks = []
        for kid, private in list(self.keys.items()):
            jwk = jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)
            jwks.append({**jwk, "kid": kid, "alg": "RS256", "use": "sig"})
        return {"keys": jwks}

    def public_pem(self, kid: str) -> bytes:
        return (
            self.keys[kid]
            .public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )


def claims(**changes) -> dict:
    now = int(time.time())
    base = {
        "aud": [AUD],
        "iss": ISSUER,
        "email": EMAIL,
        "sub": "7335d417-61da-459d-899c-0a01c76a2f94",
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "type": "app",
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def sign(keyset: KeySet, kid: str, **changes) -> str:
    private = keyset.keys[kid]
    return jwt.encode(claims(**changes), private, algorithm="RS256", headers={"kid": kid})


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict, payload: dict, signature: bytes = b"") -> str:
    head = b64(json.dumps(header).encode()) + "." + b64(json.dumps(payload).encode())
    return head + "." + b64(signature)
