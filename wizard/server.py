"""Server: the API process of a node. Waitress serves the WSGI app
(:func:`wizard.api.make_app`) until SIGTERM, then finishes the requests in
flight and exits. The supervisor starts it with ``spawn`` (:func:`run_api`
is top-level so a fresh interpreter can find it by name).

Three things differ from waitress's defaults (:func:`create`), all about the
edge between the cluster and its clients:

- ``X-Forwarded-For`` reaches the app untouched; :mod:`wizard.identity`
  decides whom to believe (waitress's own ``trusted_proxy`` takes one
  address or ``*``, not the list of networks ``WIZARD_TRUSTED_PROXIES`` is).
- Request line and headers may take :data:`MAX_HEADER_BYTES` (16 KiB), not
  waitress's 256 KiB: a 20 KB header is refused, as at the gateway.
- A body may take the API's own limit (``router.MAX_BODY_BYTES``, 16 KiB),
  not waitress's 1 GiB: a longer one is refused before it is read (a
  ``Content-Length`` over it at once, a chunked body as it passes it), with
  the same 413 problem document the API and the gateway give.
- A request waitress cannot even parse (a control byte in a header value,
  bad chunked framing, headers over that limit) never reaches the app, and
  waitress answers it itself in ``text/plain``. Here its error task is
  replaced so that answer is an RFC 9457 problem document like every other
  error of the API.

One differs from Python's: the interpreter lock's switch interval
(``WIZARD_SWITCH_INTERVAL``, 1 ms instead of 5 ms). A synchronous ``/add`` is
CPU work in pure Python and holds the lock; a health check needs it a few
times, briefly each (the waitress loop reads the request, a request thread
answers, the loop writes). A thread that wants the lock asks the holder to
let go only once the interval has passed, and may then lose the race to
another CPU-bound thread, so each of those turns waits an interval or more.
A shorter interval lets the health check in sooner; the /add threads still
take turns on one core and do the same work (measured by
``make edge-figures``, docs/edge.md)::

    >>> server = create(make_app(settings), settings)   # doctest: +SKIP
    >>> server.run()                                     # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from http import HTTPStatus

import valkey
from waitress import create_server
from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer
from waitress.task import ErrorTask

from . import faults, logs, proctitle
from .config import Settings
from .loop import run_steps
from .router import MAX_BODY_BYTES, PROBLEM_BASE, HTTPError, PayloadTooLarge

log = logging.getLogger(__name__)


def run_api(settings: Settings) -> None:
    """Entry point of the API process: serve the WSGI app with waitress until
    SIGTERM, then finish in-flight requests and exit."""
    from .api import make_app

    logs.configure(settings.log_level, node=settings.node_id, process="api")
    faults.install_crash_hooks()
    proctitle.name(node_id=settings.node_id, role="api")
    # waitress logs "Task queue depth is N" for every request that waits for
    # a free thread: one JSON line per request exactly when the node is busiest.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    # Before any request thread exists (see the module docstring).
    sys.setswitchinterval(settings.switch_interval)
    app = make_app(settings)
    server = create(app, settings)
    _start_watchdog(app.client, settings)
    log.info("api listening", extra={"url": f"http://{settings.host}:{settings.port}"})
    server.run()
    log.info("api stopping: SIGTERM")


def _exit_on_sigterm(signum, frame) -> None:
    # waitress.run() catches SystemExit and shuts its thread pool down.
    raise SystemExit(0)


def _start_watchdog(client: valkey.Valkey, settings: Settings) -> None:
    """The API's background thread: exit if the supervisor dies without
    telling us (e.g. SIGKILL); checked every second. With
    ``WIZARD_CHAOS_OPERATIONS`` it also reads the chaos suite's fault switch
    (:func:`faults.inject`), so the suite can make it crash on purpose."""
    stopping = threading.Event()

    def check() -> None:
        faults.inject(client, settings.chaos_operations, settings.node_id, "api")
        stopping.wait(1.0)

    def orphaned(reason: str) -> None:
        log.warning(f"api stopping: {reason}")
        stopping.set()
        os.kill(os.getpid(), signal.SIGTERM)

    loop = {"step": check, "stopped": stopping.is_set, "stop": orphaned}
    watchdog = threading.Thread(
        target=run_steps,
        kwargs={**loop, "pause": stopping.wait, "what": "api watchdog"},
        name="api-watchdog",
        daemon=True,
    )
    watchdog.start()


#: Seconds an idle or silent connection may hold a request thread's channel:
#: long enough for nginx keepalive reuse, short enough to free threads.
CHANNEL_TIMEOUT = 30

#: Most bytes of request line and headers a node reads (waitress's default is
#: 256 KiB); over it a 431 problem document, like the gateway's (nginx: at
#: most 8 KiB a line). No request of this API needs more than a few hundred.
MAX_HEADER_BYTES = 16 * 1024


def create(app, settings: Settings) -> BaseWSGIServer:
    """A waitress server for ``app`` on ``settings.host:settings.port`` with
    ``settings.threads`` request threads (not started: call ``run()``)."""
    server = create_server(
        app,
        host=settings.host,
        port=settings.port,
        threads=settings.threads,
        ident="wizard",
        channel_timeout=CHANNEL_TIMEOUT,
        max_request_header_size=MAX_HEADER_BYTES,
        # waitress refuses a body of max_request_body_size bytes or more;
        # the API takes one of MAX_BODY_BYTES.
        max_request_body_size=MAX_BODY_BYTES + 1,
        # Leave X-Forwarded-For to wizard.identity (see the module docstring);
        # waitress would otherwise delete it from every peer, making every
        # client behind nginx one client.
        clear_untrusted_proxy_headers=False,
    )
    server.channel_class = _problem_channel(settings.node_id)
    return server


def _problem_channel(node_id: str) -> type[HTTPChannel]:
    """waitress's connection class, answering unparsable requests with
    :class:`ProblemErrorTask` on behalf of ``node_id``."""
    task = type("NodeProblemErrorTask", (ProblemErrorTask,), {"node_id": node_id})
    return type("ProblemChannel", (HTTPChannel,), {"error_task_class": task})


class ProblemErrorTask(ErrorTask):
    """waitress's answer to a request it could not parse, as a problem
    document (RFC 9457): same status, ``application/problem+json``."""

    #: The node named in ``handled_by``.
    node_id = "node"

    def execute(self) -> None:
        """Write the problem document and close the connection (the rest of
        the bytes on it cannot be trusted to start a request)."""
        error = self.request.error
        body = problem_body(error.code, error.reason, error.body, self.node_id)
        self.status = f"{error.code} {error.reason}"
        self.response_headers.append(("Content-Type", "application/problem+json"))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


def problem_body(code: int, reason: str, explanation: str, node_id: str) -> bytes:
    """The problem document (RFC 9457) answering a request waitress refused
    with status ``code`` (its ``reason`` phrase and its ``explanation``),
    as compact JSON ending in a newline, like every answer of the API.

    A body over the limit (413) and headers over theirs (431) get the same
    problem type, title and detail as the API's and the gateway's own, and
    waitress's own 500 the API's ``internal-error`` type (one type per
    meaning, whoever answers).
    """
    problem = {
        "type": PROBLEM_BASE + reason.lower().replace(" ", "-"),
        "title": reason,
        "status": code,
        "detail": (
            f"the node could not read this request ({explanation}); "
            "send a well-formed HTTP/1.1 request with printable header values"
        ),
    }
    if code == HTTPStatus.REQUEST_ENTITY_TOO_LARGE:
        problem = PayloadTooLarge(f"the body may be at most {MAX_BODY_BYTES} bytes").problem()
    if code == HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE:
        problem["type"] = PROBLEM_BASE + "headers-too-large"
        problem["detail"] = (
            f"the request line and headers are too large (at most "
            f"{MAX_HEADER_BYTES // 1024} KiB in all); send fewer or shorter headers"
        )
    if code == HTTPStatus.INTERNAL_SERVER_ERROR:
        problem["type"] = PROBLEM_BASE + HTTPError.slug
    problem["handled_by"] = node_id
    return json.dumps(problem, separators=(",", ":")).encode() + b"\n"
