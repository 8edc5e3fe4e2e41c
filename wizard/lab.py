"""Lab mode: the local cluster set up for the classroom labs (``make lab``).

``python -m wizard up --lab`` starts the same cluster as ``make run`` with
the settings the labs in ``ops/scripts/`` need, so no lab has to restart it
with other variables:

==============================  ======  ======================================
variable                        lab     why
==============================  ======  ======================================
``WIZARD_CHAOS_OPERATIONS``     1       the ``crash`` operation (lab 11: poison)
``WIZARD_ADMIN_TOKEN``          random  dead-letter retries (lab 11); printed
``WIZARD_RATE_LIMIT``           5       429s within one burst (lab 10)
``WIZARD_RATE_BURST``           15      ... after 15 requests at once
``WIZARD_LEASE_SECONDS``        3       a killed worker's task is back in ~3 s
``WIZARD_BLOCK_SECONDS``        0.5     (must be under half the lease)
``WIZARD_MAX_ATTEMPTS``         2       a poison task is dead after 2 crashes
``WIZARD_SWITCH_INTERVAL``      0.005   Python's own (lab 5, see below)
==============================  ======  ======================================

Lab 5 compares N /add threads of one process with a single thread beside
them. With the nodes' 1 ms switch interval the thread waiting for the lock
wakes every millisecond, and on a busy machine the kernel then gives the
two-thread process more CPU than the single thread, so the lab's ratio
understates the lock; Python's own 5 ms keeps it closer (not always: see
the README of ops/scripts).

A variable already set in the launcher's environment wins over the lab's
value, so ``WIZARD_WORK_SECONDS=1 make lab`` still works. The admin token is
made once (random) and kept in ``var/secrets/admin-token`` (mode 0600); the
scripts read it from there. Never a production setting: chaos on, a token in
a file next to the checkout.

    >>> env = node_env(Path("var"), environ={"WIZARD_MAX_ATTEMPTS": "5"})  # doctest: +SKIP
    >>> "WIZARD_MAX_ATTEMPTS" in env          # yours wins: not overridden   # doctest: +SKIP
    False
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from . import acl

#: The lab's settings for every node (see the table above).
LAB_SETTINGS: dict[str, str] = {
    "WIZARD_CHAOS_OPERATIONS": "1",
    "WIZARD_RATE_LIMIT": "5",
    "WIZARD_RATE_BURST": "15",
    "WIZARD_LEASE_SECONDS": "3",
    "WIZARD_BLOCK_SECONDS": "0.5",
    "WIZARD_MAX_ATTEMPTS": "2",
    "WIZARD_SWITCH_INTERVAL": "0.005",
}

#: Under var/secrets/: the lab's admin token (mode 0600).
ADMIN_TOKEN_FILE = "admin-token"


def admin_token_path(var_dir: Path) -> Path:
    """Where the lab keeps its admin token."""
    return Path(var_dir) / "secrets" / ADMIN_TOKEN_FILE


def admin_token(var_dir: Path) -> str:
    """The lab's admin token: read from ``var/secrets/admin-token``, made
    (random, 64 hex digits, mode 0600) the first time.

    Raises:
        OSError: the file cannot be written or read.
    """
    return acl.ensure_password(admin_token_path(var_dir))


def node_env(var_dir: Path, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables lab mode gives every node: :data:`LAB_SETTINGS` and
    ``WIZARD_ADMIN_TOKEN``, minus any already set in ``environ`` (default
    ``os.environ``), which the nodes inherit as they are.

    Raises:
        OSError: the admin token file cannot be written or read.
    """
    environ = os.environ if environ is None else environ
    wanted = {**LAB_SETTINGS, "WIZARD_ADMIN_TOKEN": admin_token(var_dir)}
    return {name: value for name, value in wanted.items() if name not in environ}


def effective(var_dir: Path, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The lab's variables as the nodes see them: yours from ``environ``
    (default ``os.environ``) where set, the lab's otherwise.

    Raises:
        OSError: the admin token file cannot be written or read.
    """
    environ = os.environ if environ is None else environ
    wanted = {**LAB_SETTINGS, "WIZARD_ADMIN_TOKEN": admin_token(var_dir)}
    return {name: environ.get(name, value) for name, value in wanted.items()}


def banner_lines(var_dir: Path, environ: Mapping[str, str] | None = None) -> list[str]:
    """What the launcher's banner says about lab mode: the settings the
    nodes run with (:func:`effective`) and where the admin token is."""
    get = effective(var_dir, environ).get
    return [
        "",
        "  LAB MODE (for ops/scripts/ and docs/walkthrough.md; never in production)",
        "    chaos operation     'crash' "
        f"(WIZARD_CHAOS_OPERATIONS={get('WIZARD_CHAOS_OPERATIONS')})",
        f"    rate limit          {get('WIZARD_RATE_LIMIT')}/s per client, "
        f"bursts of {get('WIZARD_RATE_BURST')}",
        f"    leases              {get('WIZARD_LEASE_SECONDS')} s, "
        f"{get('WIZARD_MAX_ATTEMPTS')} attempts before a dead letter",
        f"    admin token         {get('WIZARD_ADMIN_TOKEN')}",
        f"                        (in {admin_token_path(var_dir)}; the lab scripts read it there)",
    ]
