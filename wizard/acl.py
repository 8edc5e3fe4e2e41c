"""ACL: who may do what on the local cluster's Valkey.

Valkey holds every task, so anyone who can talk to it can read, change or
drop them all (FLUSHALL), reconfigure it (CONFIG SET) or stop it (SHUTDOWN).
Locked down, it knows three users (Valkey ACLs, https://valkey.io/topics/acl/):

- ``default`` (what a client gets without logging in): off;
- ``wizard``, the nodes: only the commands and keys they use, the rules in
  ``ops/valkey/wizard-user.acl`` (the same file compose and Kubernetes use);
- ``admin``, local only, for tests and the chaos suite (CONFIG SET, DEBUG)
  and for you at a terminal: everything.

Passwords are random, made once, kept in files readable by their owner
only (mode 0600) and never in the repository; Valkey stores only their
SHA-256::

    >>> password = ensure_password(Path("var/secrets/valkey-wizard"))  # doctest: +SKIP
    >>> acl_file(password, admin_password=None)                         # doctest: +SKIP
    'user default off\\nuser wizard on #5e88... resetkeys ...\\n'
"""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

#: The project's ops/ folder.
OPS = Path(__file__).resolve().parent.parent / "ops"

#: The nodes' ACL rules, shared with compose and Kubernetes.
RULES_PATH = OPS / "valkey" / "wizard-user.acl"

#: The nodes' Valkey user name.
NODE_USER = "wizard"

#: The local administrator's user name (tests, chaos, a human).
ADMIN_USER = "admin"

#: Under the local cluster's var/secrets/: the nodes' and the admin's
#: password files.
NODE_PASSWORD_FILE = "valkey-wizard-password"
ADMIN_PASSWORD_FILE = "valkey-admin-password"

#: Bytes of randomness in a generated password (shown as twice as many hex digits).
PASSWORD_BYTES = 32


def node_rules(path: Path = RULES_PATH) -> str:
    """The rules of the nodes' user: the non-comment lines of ``path``
    joined into one line."""
    lines = path.read_text().splitlines()
    return " ".join(line.strip() for line in lines if line.strip() and not line.startswith("#"))


def ensure_password(path: Path) -> str:
    """The password in ``path``; made (random, hex) and written with mode
    0600 first if the file does not exist yet.

    Raises:
        OSError: the folder cannot be created or the file read.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        # Made by an earlier run: keep it, the AOF's clients use it.
        return path.read_text().strip()
    with os.fdopen(descriptor, "w") as file:
        file.write(secrets.token_hex(PASSWORD_BYTES) + "\n")
    return path.read_text().strip()


def acl_file(node_password: str, admin_password: str | None) -> str:
    """The text of a Valkey ACL file: default off, the nodes' user with
    :func:`node_rules`, and the admin user when ``admin_password`` is given."""

    def digest(password: str) -> str:
        return "#" + hashlib.sha256(password.encode()).hexdigest()

    lines = ["user default off", f"user {NODE_USER} on {digest(node_password)} {node_rules()}"]
    if admin_password is not None:
        lines.append(f"user {ADMIN_USER} on {digest(admin_password)} ~* &* +@all")
    return "\n".join(lines) + "\n"
