"""The command line: ``python -m wizard node | up``.

- ``node``: one node (supervisor, API, workers, scheduler); configured by
  the environment (see :mod:`wizard.config`). The container's command.
- ``up``: the whole cluster on this machine (embedded Valkey, N nodes,
  nginx); what ``make run`` runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import ConfigError, Settings, external_valkey_url

#: Exit code when a WIZARD_* variable (or VALKEY_URL) holds a bad value.
EXIT_CONFIG = 2


def _port(text: str) -> int:
    """A TCP port number, 1-65535 (for argparse)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 1-65535, got {port}")
    return port


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m wizard", description="Distributed Math Wizard: producer/consumer lab."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("node", help="run one node (configured by WIZARD_* variables)")
    up = commands.add_parser("up", help="run the whole cluster locally: Valkey, nodes, nginx")
    up.add_argument("--port", type=_port, default=8080, help="gateway port (default 8080)")
    up.add_argument(
        "--nodes",
        type=int,
        default=3,
        choices=range(1, 17),
        metavar="N",
        help="number of nodes, 1-16 (default 3)",
    )
    up.add_argument(
        "--workers",
        type=int,
        default=1,
        choices=range(0, 65),
        metavar="W",
        help="worker processes per node, 0-64 (default 1)",
    )
    up.add_argument(
        "--var-dir",
        type=Path,
        default=None,
        help="folder for Valkey's AOF, the nginx config and the logs (default var/)",
    )
    up.add_argument(
        "--ha",
        action="store_true",
        help="a Valkey primary, two replicas and three sentinels instead of one Valkey; "
        "the nodes find the primary through the sentinels and follow a failover",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command in ``argv``; returns the process exit code."""
    args = _parser().parse_args(argv)
    try:
        # Checked here for `up` too, so a bad WIZARD_* variable is named on
        # the terminal rather than in each node's log.
        settings = Settings.from_env()
        valkey_url = external_valkey_url()
    except ConfigError as error:
        print(f"wizard {args.command}: {error}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "node":
        from .supervisor import run_node

        return run_node(settings)
    from .cluster import run_up

    return run_up(
        port=args.port,
        nodes=args.nodes,
        workers=args.workers,
        valkey_url=valkey_url,
        var_dir=args.var_dir,
        ha=args.ha,
    )


if __name__ == "__main__":
    sys.exit(main())
