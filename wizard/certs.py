"""Certs: a local certificate authority and a server certificate, so the
public gateway's TLS runs (and is tested) without a Cloudflare account.

In production the public nginx presents a Cloudflare Origin CA certificate
that only cloudflared trusts. ``make certs`` (``python -m wizard.certs``)
makes a stand-in with the same shape: a private CA that nobody else trusts,
and an RSA 2048 server certificate it signed for the public hostname::

    ops/nginx/certs/local-ca.pem   the CA's certificate (give it to a client
                                   as its trust root, like cloudflared's caPool)
    ops/nginx/certs/origin.pem     the server certificate, what nginx presents
    ops/nginx/certs/origin.key     its private key (mode 0600)

The folder is ignored by git. The CA's own key is never written: it signs
once and is forgotten, so nobody can issue another certificate from it.
Requires the ``cryptography`` package (the ``public`` extra brings it).
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import sys
from dataclasses import dataclass
from pathlib import Path

#: Where nginx.public.conf reads its certificate (relative to ops/nginx/).
DEFAULT_FOLDER = Path(__file__).resolve().parent.parent / "ops" / "nginx" / "certs"

#: The hostname the certificate names, as in ops/cloudflared/config.yml.
DEFAULT_HOSTNAME = "math-wizard.example.com"

#: Also named, so local clients and the compose service can connect by name.
LOCAL_NAMES = ("localhost", "gateway-public")

#: How long the certificates are valid, days (Mozilla's intermediate
#: profile: at most 366; these are throwaway, a week is plenty).
VALID_DAYS = 7


@dataclass(frozen=True)
class CertPaths:
    """The three files :func:`make_certs` writes."""

    ca: Path
    certificate: Path
    key: Path


def make_certs(folder: Path, hostname: str = DEFAULT_HOSTNAME) -> CertPaths:
    """Write a new local CA certificate and a server certificate (with its
    key, mode 0600) for ``hostname``, ``localhost``, ``gateway-public`` and
    127.0.0.1 into ``folder``; replaces earlier ones.

    Raises:
        ImportError: the ``cryptography`` package is missing.
        OSError: the folder cannot be written.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Math Wizard local CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    server_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    names = [x509.DNSName(hostname), *(x509.DNSName(n) for n in LOCAL_NAMES)]
    names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    paths = CertPaths(folder / "local-ca.pem", folder / "origin.pem", folder / "origin.key")
    paths.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths.certificate.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    key_pem = server_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    paths.key.unlink(missing_ok=True)
    descriptor = os.open(paths.key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(key_pem)
    return paths


def main(argv: list[str] | None = None) -> int:
    """``python -m wizard.certs [--out DIR] [--hostname NAME]``."""
    parser = argparse.ArgumentParser(
        prog="python -m wizard.certs",
        description="Make a local CA and a server certificate for the public nginx.",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_FOLDER, help="folder to write to")
    parser.add_argument("--hostname", default=DEFAULT_HOSTNAME, help="public hostname to name")
    args = parser.parse_args(argv)
    try:
        paths = make_certs(args.out, args.hostname)
    except ImportError:
        print("wizard certs: install the public extra: pip install -e '.[public]'", file=sys.stderr)
        return 1
    print(f"wrote {paths.ca}, {paths.certificate} and {paths.key} (valid {VALID_DAYS} days)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
