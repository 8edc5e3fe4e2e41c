"""The command line: ``python -m wizard node | up | inspect``.

- ``node``: one node (supervisor, API, workers, scheduler); configured by
  the environment (see :mod:`wizard.config`). The container's command.
- ``up``: the whole cluster on this machine (embedded Valkey, N nodes,
  nginx); what ``make run`` runs (``--lab``: what ``make lab`` runs).
- ``inspect``: a read-only look inside Valkey (queue, processing lists,
  heartbeats, a task's hash); see :mod:`wizard.inspection`.
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
    look = commands.add_parser("inspect", help="read-only look inside Valkey: queue, lists, tasks")
    look.add_argument("--task", default=None, help="the task whose hash to show (default: newest)")
    look.add_argument(
        "--var-dir",
        type=Path,
        default=Path(__file__).resolve().parent.parent / "var",
        help="the local cluster's folder, for its cluster.json (default var/)",
    )
    up.add_argument(
        "--ha",
        action="store_true",
        help="a Valkey primary, two replicas and three sentinels instead of one Valkey; "
        "the nodes find the primary through the sentinels and follow a failover",
    )
    up.add_argument(
        "--lab",
        action="store_true",
        help="lab mode for ops/scripts/: chaos operation, admin token, rate limits, short leases",
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
    if args.command == "inspect":
        return _inspect(args.var_dir, args.task)
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
        lab_mode=args.lab,
    )


def _inspect(var_dir: Path, task_id: str | None) -> int:
    """``python -m wizard inspect``: print the report; 1 if Valkey cannot
    be reached (the reason on stderr)."""
    import os

    import valkey

    from .inspection import InspectError, connect, report

    try:
        client, where = connect(var_dir, os.environ)
        print(where)
        for line in report(client, task_id):
            print(line)
    except (InspectError, OSError, valkey.ValkeyError) as error:
        # Nothing to inspect (no cluster, no password, Valkey down): say why.
        print(f"wizard inspect: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
