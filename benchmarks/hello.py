"""Hello world: the ceiling of the HTTP figures.

The smallest WSGI application there is, served by waitress with the same
settings as a node's API process (``WIZARD_THREADS`` threads, the same
channel timeout), so the gap between it and a node is the cost of the
wizard's own code (router, handlers, Valkey), nothing else::

    python benchmarks/hello.py 8101        # serves http://127.0.0.1:8101/

It answers every method and path with 200 and a small JSON body (so nginx's
readiness probe on ``/healthz`` passes too) and exits 0 on SIGTERM.
"""

from __future__ import annotations

import signal
import sys

import waitress

from wizard.config import Settings

BODY = b'{"hello":"world","handled_by":"hello"}'

#: The API process's waitress settings (wizard/server.py, run_api).
CHANNEL_TIMEOUT = 30


def app(environ: dict, start_response) -> list[bytes]:
    """The WSGI application (PEP 3333): 200 and BODY, always."""
    start_response(
        "200 OK",
        [("Content-Type", "application/json"), ("Content-Length", str(len(BODY)))],
    )
    return [BODY]


def _exit_on_sigterm(signum, frame) -> None:
    # waitress.run() catches SystemExit and shuts its thread pool down.
    raise SystemExit(0)


def main(argv: list[str]) -> int:
    """Serve :func:`app` on 127.0.0.1:<argv[1]> until SIGTERM."""
    settings = Settings.from_env()
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    server = waitress.create_server(
        app,
        host="127.0.0.1",
        port=int(argv[1]),
        threads=settings.threads,
        ident="hello",
        channel_timeout=CHANNEL_TIMEOUT,
    )
    server.run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
