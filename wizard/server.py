"""Server: the API process of a node. Waitress serves the WSGI app
(:func:`wizard.api.make_app`) until SIGTERM, then finishes the requests in
flight and exits. The supervisor starts it with ``spawn`` (:func:`run_api`
is top-level so a fresh interpreter can find it by name)."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

from . import logs
from .config import Settings

log = logging.getLogger(__name__)


def run_api(settings: Settings) -> None:
    """Entry point of the API process: serve the WSGI app with waitress until
    SIGTERM, then finish in-flight requests and exit."""
    import waitress

    from .api import make_app

    logs.configure(settings.log_level, node=settings.node_id, process="api")
    # waitress logs "Task queue depth is N" for every request that waits for
    # a free thread: one JSON line per request exactly when the node is busiest.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    server = waitress.create_server(
        make_app(settings),
        host=settings.host,
        port=settings.port,
        threads=settings.threads,
        ident="wizard",
        # Long enough for nginx keepalive reuse, short enough to free threads.
        channel_timeout=30,
        # Leave X-Forwarded-For to wizard.identity, which believes it only
        # from WIZARD_TRUSTED_PROXIES (a list of networks; waitress's own
        # trusted_proxy takes one address or "*"). waitress would otherwise
        # delete it from every peer, making every client behind nginx one.
        clear_untrusted_proxy_headers=False,
    )
    _exit_when_orphaned()
    log.info("api listening", extra={"url": f"http://{settings.host}:{settings.port}"})
    server.run()
    log.info("api stopping: SIGTERM")


def _exit_on_sigterm(signum, frame) -> None:
    # waitress.run() catches SystemExit and shuts its thread pool down.
    raise SystemExit(0)


def _exit_when_orphaned() -> None:
    """Exit if the supervisor dies without telling us (e.g. SIGKILL)."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        log.warning("api stopping: the supervisor is gone")
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="orphan-watch", daemon=True).start()
