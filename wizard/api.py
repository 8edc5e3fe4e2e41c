"""API: the producer side. One function per endpoint, and the route table.

Each handler takes the :class:`~wizard.router.Request` (plus path
parameters) and returns a :class:`~wizard.router.Response` or raises an
:class:`~wizard.router.HTTPError`. The route table, at the bottom of
:meth:`Api.routes`, is the whole HTTP surface on one screen::

    >>> app = make_app(Settings(node_id="node-1"))        # doctest: +SKIP
    >>> # app is a WSGI callable: waitress.serve(app) or wsgiref

Every JSON body names the node that served it (``handled_by``, or
``checked_by``/``accepted_by`` where the contract says so).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import math
import mimetypes
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import valkey

from . import __version__, access, health, membership, metrics, queue, store
from .config import Settings
from .operations import (
    Checkpoint,
    InvalidOperand,
    UnknownOperation,
    calibrate,
    check_operation,
    compute,
    parse_operand,
)
from .ratelimit import Decision, RateLimiter
from .router import (
    IDENTITY_KEY,
    BadRequest,
    Forbidden,
    JsonNumber,
    NotFound,
    Request,
    Response,
    Route,
    Router,
    ServiceUnavailable,
    TooManyRequests,
    Unauthorized,
    UnprocessableContent,
    is_token,
    start_response_for,
)
from .views import cluster_view

log = logging.getLogger(__name__)

#: The dashboard's files: plain HTML, CSS and JavaScript (no build step).
STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

#: The fields POST /task takes (query string, form or JSON body).
TASK_FIELDS = ("a", "b", "operation")

#: Most tasks one ``GET /tasks`` may return.
MAX_LIST_LIMIT = store.RECENT_LIMIT

#: Seconds a client is asked to wait when the queue is full (Retry-After).
QUEUE_FULL_RETRY_AFTER = 5

#: The ``realm`` of the admin routes' ``WWW-Authenticate`` challenge.
ADMIN_REALM = "wizard-admin"


class Api:
    """The WSGI application of one node: settings, a Valkey client shared by
    the request threads (valkey-py pools connections and is thread-safe),
    in-memory HTTP metrics and the router."""

    def __init__(self, settings: Settings, client: valkey.Valkey | None = None) -> None:
        self.settings = settings
        # A durable ack waits up to 1 s for WAIT and 1 s for WAITAOF, one
        # after the other; otherwise nothing blocks.
        waits = 2 * queue.ACK_TIMEOUT_MS / 1000 if settings.durable_ack else 0.0
        self.client = client or store.connect(settings, blocking_seconds=waits)
        self.scripts = queue.Scripts(self.client)
        self.limiter = None
        if settings.rate_limit > 0:
            self.limiter = RateLimiter(
                self.client, per_second=settings.rate_limit, burst=settings.rate_burst
            )
        self.trusted = settings.trusted_networks
        # Threads that may do synchronous work at once: the others stay free
        # for /healthz, /readyz, /metrics and cheap reads (never starve health).
        self.sync_slots = threading.BoundedSemaphore(settings.sync_slots)
        self.http_metrics = metrics.ApiMetrics()
        self.access = None
        if settings.access_enabled:
            policy = access.AccessPolicy.for_team(
                settings.access_team_domain, settings.access_aud, settings.access_jwks_url
            )
            self.access = access.AccessVerifier(policy)
        self.router = Router(self.routes(), node_id=settings.node_id)
        self.hostname = socket.gethostname()
        calibrate(settings.work_seconds)

    def __call__(self, environ: dict, start_response) -> list[bytes]:
        """The WSGI entry point (PEP 3333). With Access on, a request without
        a valid token is answered 403 here, before any route runs."""
        request = Request(environ, trusted=self.trusted)
        started = time.perf_counter()
        refusal = self._check_access(request)
        if refusal is None:
            route, response = self.router.dispatch(request)
        else:
            route, response = None, refusal
        seconds = time.perf_counter() - started
        pattern = route.pattern if route else "unmatched"
        self.http_metrics.observe(pattern, request.method, response.status, seconds)
        log.info(
            "request",
            extra={
                "request_id": request.request_id,
                "client": request.client,
                "method": request.method,
                "path": request.path,
                "status": response.status,
                "duration_ms": round(seconds * 1000, 3),
                "identity": environ.get(IDENTITY_KEY),
            },
        )
        return start_response_for(response, request, start_response)

    def _check_access(self, request: Request) -> Response | None:
        """Verify the request's Cloudflare Access token (wizard/access.py).
        On success, record the identity in the environ (it becomes
        ``request.client``) and return None; otherwise the problem to send:
        403, or 503 when the team's keys cannot be fetched."""
        if self.access is None or request.path in access.OPEN_PATHS:
            return None
        try:
            identity = self.access.identity(access.token_of(request.environ))
        except access.Denied as error:
            # No token, a forged, expired or foreign one: the client's fault.
            log.info(
                "access denied", extra={"request_id": request.request_id, "reason": str(error)}
            )
            return self.router.problem(Forbidden(str(error)))
        except access.KeysUnavailable as error:
            # Cloudflare's key set is out of reach: nobody can be checked.
            return self.router.problem(ServiceUnavailable(str(error), retry_after=5))
        request.environ[IDENTITY_KEY] = identity
        return None

    @contextlib.contextmanager
    def valkey(self) -> Iterator[valkey.Valkey]:
        """Use Valkey; turn "unreachable" and "full" into a 503 problem.

        Raises:
            ServiceUnavailable: Valkey is down, loading, out of memory, or a
                durable write was not confirmed.
        """
        try:
            yield self.client
        except valkey.TimeoutError as error:
            # Sent, but no answer in time: the write may still happen.
            raise ServiceUnavailable(
                f"Valkey did not answer in time ({error}); a write sent to it may still "
                "happen: retry a POST /task with the same Idempotency-Key header to be safe"
            ) from None
        except valkey.ConnectionError as error:
            # Down or restarting: the client may retry after a second.
            detail = f"Valkey is unreachable ({error}); try again shortly"
            raise ServiceUnavailable(detail) from None
        except valkey.exceptions.OutOfMemoryError:
            # maxmemory reached with noeviction: refuse rather than lose data.
            raise ServiceUnavailable(
                "Valkey is out of memory; nothing was stored", retry_after=5
            ) from None
        except valkey.exceptions.ExecAbortError as error:
            # A transaction refused as a whole (often OOM): nothing was stored.
            raise ServiceUnavailable(
                f"Valkey refused the write ({error}); nothing was stored"
            ) from None
        except queue.NotDurable as error:
            # Queued but not confirmed on disk: say so, and name the task so
            # the client can check it instead of submitting it twice.
            raise ServiceUnavailable(
                f"{error}; task {error.task_id} is queued but may be lost if Valkey crashes; "
                f"check /tasks/{error.task_id}/status before submitting again"
            ) from None

    def json(self, data: dict, status: int = 200, **headers: str) -> Response:
        """A JSON response naming this node as ``handled_by``."""
        return Response.json({**data, "handled_by": self.settings.node_id}, status, **headers)

    # --- pages ------------------------------------------------------------

    def index(self, request: Request) -> Response:
        """``GET /``: the dashboard."""
        return self.static(request, "index.html")

    def static(self, request: Request, name: str) -> Response:
        """``GET /static/<name>``: one file of the dashboard, never outside it."""
        path = STATIC_DIR / name
        if name.startswith(".") or not path.is_file():
            raise NotFound(f"there is no static file {name!r}")
        kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
        if kind.startswith("text/") or kind == "application/javascript":
            kind += "; charset=utf-8"
        return Response(200, path.read_bytes(), {"Content-Type": kind, "Cache-Control": "no-cache"})

    # --- identity and health ----------------------------------------------

    def whoami(self, request: Request) -> Response:
        """``GET /whoami``: which node answered (the round robin made visible)."""
        return self.json(
            {
                "node": self.settings.node_id,
                "hostname": self.hostname,
                "pid": os.getpid(),
                "version": __version__,
            }
        )

    def healthz(self, request: Request) -> Response:
        """``GET /healthz``: the API process is alive (checks nothing else)."""
        return self.json({"status": "ok"})

    def readyz(self, request: Request) -> Response:
        """``GET /readyz``: Valkey answers, takes writes and evicts nothing;
        this node's workers heartbeat; none of its processes is in a restart
        loop. Otherwise a 503 problem whose detail names each unhealthy part
        and why (see :mod:`wizard.health`)."""
        node = self.settings.node_id
        worker_ids = membership.node_worker_ids(node, self.settings.workers)
        with self.valkey() as client:
            with client.pipeline(transaction=False) as pipe:
                # INFO, not CONFIG GET: the nodes' Valkey user may not
                # touch the configuration (ops/valkey/wizard-user.acl).
                pipe.info("memory")
                pipe.hgetall(store.restarts_key(node))
                for worker_id in worker_ids:
                    membership.queue_is_alive(pipe, worker_id)
                memory, restarts, *alive = pipe.execute()
            silent = not all(alive)
            last_beat = {c.worker_id: c.at for c in membership.cards(client)} if silent else {}
        problems = [
            *health.valkey_problems(memory),
            *health.worker_problems(worker_ids, [bool(a) for a in alive], last_beat, time.time()),
            *health.restart_problems(node, restarts),
        ]
        if problems:
            detail = "; ".join(f"{p.part}: {p.reason}" for p in problems)
            raise ServiceUnavailable(f"not ready: {detail}")
        return self.json({"status": "ready", "workers": len(worker_ids)})

    def valkey_test(self, request: Request) -> Response:
        """``GET /valkey_test``: write a value, read it back, time the trip."""
        key = f"valkey_test:{self.settings.node_id}"
        value = f"hello from {self.settings.node_id} at {time.time():.6f}"
        started = time.perf_counter()
        with self.valkey() as client:
            with client.pipeline(transaction=False) as pipe:
                pipe.set(key, value, ex=60)
                pipe.get(key)
                _, read_value = pipe.execute()
        round_trip_ms = (time.perf_counter() - started) * 1000
        return self.json(
            {
                "valkey_ok": read_value == value,
                "read_value": read_value,
                "round_trip_ms": round(round_trip_ms, 3),
            }
        )

    # --- the work ---------------------------------------------------------

    def add(self, request: Request) -> Response:
        """``GET /add?a=&b=``: synchronous. The request thread does the work
        itself and the caller waits for it (the design the queue replaces).

        At most ``WIZARD_SYNC_SLOTS`` run at once on a node; past that the
        answer is an immediate 503 pointing to POST /task, so the remaining
        request threads stay free for health checks. The slot is checked
        before the rate limit: a refusal costs no Valkey round trip, so a
        flood of additions drains from the node's queue in microseconds.
        Work that runs past ``WIZARD_SYNC_TIMEOUT`` stops and answers 503
        too (:meth:`_sync_deadline`): the node says so before the gateway
        gives up on it."""
        a = _operand(request.query, "a")
        b = _operand(request.query, "b")
        if not self.sync_slots.acquire(blocking=False):
            raise ServiceUnavailable(
                f"this node already runs {self.settings.sync_slots} synchronous additions; "
                "retry shortly, or submit it with POST /task and poll its status_url"
            )
        try:
            limits = self._limit_rate(request)
            started = time.perf_counter()
            total = compute(
                "add",
                a,
                b,
                work_seconds=self.settings.work_seconds,
                checkpoint=self._sync_deadline(started),
            )
            elapsed_ms = (time.perf_counter() - started) * 1000
        finally:
            self.sync_slots.release()
        body = {"a": a, "b": b, "sum": total, "elapsed_ms": round(elapsed_ms, 3)}
        return self.json(body, **limits)

    def _sync_deadline(self, started: float) -> Checkpoint:
        """The checkpoint of a synchronous addition begun at ``started``
        (``time.perf_counter()`` seconds): it raises once the work has run
        for ``WIZARD_SYNC_TIMEOUT`` seconds of wall-clock time.

        Raises (from the checkpoint):
            ServiceUnavailable: 503 with Retry-After, the work stopped.
        """
        limit = self.settings.sync_timeout

        def checkpoint() -> None:
            if time.perf_counter() - started > limit:
                raise ServiceUnavailable(
                    f"the addition did not finish within {limit:g} s on this node: its "
                    f"{self.settings.sync_slots} synchronous slots share one core; "
                    "submit it with POST /task and poll its status_url",
                    retry_after=max(1, round(self.settings.work_seconds)),
                )

        return checkpoint

    def submit(self, request: Request) -> Response:
        """``POST /task``: the producer. Validate, store, enqueue, answer 202
        with the task's status URL; a worker anywhere will do the work."""
        limits = self._limit_rate(request)
        response = self._submit(request)
        response.headers.update(limits)
        return response

    def _submit(self, request: Request) -> Response:
        """Validate and enqueue the task of a POST /task (see :meth:`submit`)."""
        fields = request.fields(TASK_FIELDS)
        operation = fields.get("operation", "add")
        if not isinstance(operation, str):
            raise BadRequest('operation must be a name such as "add", given as a string')
        try:
            check_operation(operation, chaos=self.settings.chaos_operations)
        except UnknownOperation as error:
            raise BadRequest(str(error)) from None
        a = _operand(fields, "a", json_names=request.json_names)
        b = _operand(fields, "b", json_names=request.json_names)
        if "HTTP_IDEMPOTENCY_KEY" in request.environ:
            key = request.header("Idempotency-Key")
            if not is_token(key):
                raise BadRequest("Idempotency-Key must be 1-64 letters, digits, '-', '_' or '.'")
            return self._submit_once(request, key, operation, a, b)
        with self.valkey() as client:
            self._admit(client)
            task_id = queue.submit(
                client,
                operation,
                a,
                b,
                accepted_by=self.settings.node_id,
                durable=self.settings.durable_ack,
            )
        self.http_metrics.task_submitted(operation)
        return self._accepted(request, task_id, operation, self.settings.node_id, "pending")

    def _submit_once(self, request: Request, key: str, operation: str, a, b) -> Response:
        """POST /task with an Idempotency-Key: a repeat answers with the task
        the key created first, in its current state, instead of a new one. A
        key whose task is gone is a fresh key (see ``queue.submit_once``);
        if the task expires between the two reads below, the key is tried
        once more and makes a new task."""
        for _ in range(2):
            with self.valkey() as client:
                if not client.exists(store.idempotency_key(request.client, key)):
                    # Only a new key adds a task; a repeat is answered even when full.
                    self._admit(client)
                try:
                    task_id, created = queue.submit_once(
                        client,
                        key,
                        operation,
                        a,
                        b,
                        accepted_by=self.settings.node_id,
                        result_ttl=self.settings.result_ttl,
                        durable=self.settings.durable_ack,
                        client_id=request.client,
                    )
                except queue.KeyReused as error:
                    raise UnprocessableContent(str(error)) from None
                if created:
                    self.http_metrics.task_submitted(operation)
                    node = self.settings.node_id
                    return self._accepted(request, task_id, operation, node, "pending")
                task = queue.status(client, task_id)
            if task is not None:
                log.info(
                    "task asked for again",
                    extra={"task_id": task_id, "request_id": request.request_id},
                )
                return self._answer(task_id, operation, task.accepted_by, task.status.value)
        raise ServiceUnavailable("the task of this Idempotency-Key keeps expiring; try again")

    def _accepted(
        self, request: Request, task_id: str, operation: str, accepted_by: str, status: str
    ) -> Response:
        """Log a new task and answer with :meth:`_answer`."""
        log.info("task accepted", extra={"task_id": task_id, "request_id": request.request_id})
        return self._answer(task_id, operation, accepted_by, status)

    def _answer(self, task_id: str, operation: str, accepted_by: str, status: str) -> Response:
        """The 202 of POST /task, with the status URL in ``Location``."""
        status_url = f"/tasks/{task_id}/status"
        body = {
            "task_id": task_id,
            "status": status,
            "operation": operation,
            "accepted_by": accepted_by,
            "status_url": status_url,
        }
        return self.json(body, 202, Location=status_url)

    def _admit(self, client: valkey.Valkey) -> None:
        """Admission control: refuse a new task while the queue holds
        ``WIZARD_MAX_PENDING`` or more, so clients cannot fill Valkey.

        The check and the push are two steps, so under a burst the queue may
        pass the bound by at most the requests in flight (threads x nodes).

        Raises:
            ServiceUnavailable: the queue is full (503, Retry-After).
        """
        pending = client.llen(store.TASK_QUEUE)
        if pending >= self.settings.max_pending:
            raise ServiceUnavailable(
                f"the queue is full ({pending} tasks pending, at most "
                f"{self.settings.max_pending}); retry later",
                retry_after=QUEUE_FULL_RETRY_AFTER,
            )

    def _limit_rate(self, request: Request) -> dict[str, str]:
        """Count this request against its client's limit (GCRA in Valkey).

        Returns the ``RateLimit-Policy`` and ``RateLimit`` headers for the
        answer (none when the limit is off).

        Raises:
            TooManyRequests: over the limit; Retry-After says when to retry.
        """
        if self.limiter is None:
            return {}
        with self.valkey():
            decision: Decision = self.limiter.check(request.client)
        headers = self.limiter.headers(decision)
        if decision.allowed:
            return headers
        seconds = max(1, math.ceil(decision.retry_after))
        raise TooManyRequests(
            f"more than {self.settings.rate_limit:g} requests per second from "
            f"{request.client}; retry after {seconds} s",
            headers={**headers, "Retry-After": str(seconds)},
        )

    def task_status(self, request: Request, task_id: str) -> Response:
        """``GET /tasks/<id>/status``: read the shared state; never writes.

        ``handled_by`` is the worker that ran the task (None until one claims
        it), so this body names its node as ``checked_by`` instead."""
        task = self._task(task_id)
        return Response.json({**task.to_json(), "checked_by": self.settings.node_id})

    def _task(self, task_id: str) -> queue.Task:
        if not queue.is_task_id(task_id):
            shown = task_id if len(task_id) <= 40 else task_id[:40] + "..."
            raise NotFound(f"there is no task {shown!r}; task ids are 32 hex digits")
        with self.valkey() as client:
            task = queue.status(client, task_id)
        if task is None:
            raise NotFound(f"there is no task {task_id}; it never existed or has expired")
        return task

    def recent_tasks(self, request: Request) -> Response:
        """``GET /tasks?limit=N``: the N newest tasks (default 20, at most 200).

        The answer carries a weak ``ETag`` computed from the tasks alone (RFC
        9110 §8.8.3: weak, because each node names itself in the body). A
        poll that sends it back in ``If-None-Match`` gets ``304 Not
        Modified`` with no body while nothing changed: an idle dashboard
        moves a few hundred bytes a second, however many tasks are stored."""
        limit = _limit(request.query.get("limit", "20"))
        with self.valkey() as client:
            tasks = [task.to_json() for task in queue.recent(client, limit)]
        tag = _weak_etag(tasks)
        if tag in request.header("If-None-Match").split(", "):
            return Response(304, b"", {"ETag": tag})
        node = self.settings.node_id
        body = {"tasks": [{**task, "checked_by": node} for task in tasks]}
        return self.json(body, ETag=tag)

    def cluster(self, request: Request) -> Response:
        """``GET /cluster``: nodes, workers and their heartbeats, queue counts
        (:func:`wizard.views.cluster_view`)."""
        with self.valkey() as client:
            view = cluster_view(client, heartbeat_seconds=self.settings.heartbeat_seconds)
        return self.json(view)

    def metrics(self, request: Request) -> Response:
        """``GET /metrics``: Prometheus text exposition format 0.0.4."""
        with self.valkey() as client:
            text = metrics.render(self.http_metrics, client, self.settings.node_id)
        kind = "text/plain; version=0.0.4; charset=utf-8"
        return Response(200, text.encode(), {"Content-Type": kind})

    # --- dead letters -----------------------------------------------------

    def dead_letters(self, request: Request) -> Response:
        """``GET /dead_letters``: tasks that exhausted their attempts."""
        limit = _limit(request.query.get("limit", "100"))
        with self.valkey() as client:
            tasks = queue.dead_letters(client, limit)
        letters = [
            {
                "task_id": t.task_id,
                "operation": t.operation,
                "a": t.a,
                "b": t.b,
                "attempts": t.attempts,
                "reason": t.reason,
                "error": t.error,
                "failed_at": t.finished_at,
            }
            for t in tasks
        ]
        return self.json({"dead_letters": letters})

    def redrive(self, request: Request, task_id: str) -> Response:
        """``POST /dead_letters/<id>/retry``: enqueue it again (admin)."""
        self._authorize(request)
        with self.valkey():
            moved = queue.redrive_dead_letter(self.scripts, task_id)
        if not moved:
            raise NotFound(f"task {task_id} is not in the dead-letter queue")
        status_url = f"/tasks/{task_id}/status"
        body = {"task_id": task_id, "status": "pending", "status_url": status_url}
        return self.json(body, 202, Location=status_url)

    def discard(self, request: Request, task_id: str) -> Response:
        """``DELETE /dead_letters/<id>``: forget it for good (admin)."""
        self._authorize(request)
        with self.valkey():
            deleted = queue.delete_dead_letter(self.scripts, task_id)
        if not deleted:
            raise NotFound(f"task {task_id} is not in the dead-letter queue")
        return self.json({"task_id": task_id, "deleted": True})

    def _authorize(self, request: Request) -> None:
        """Check ``Authorization: Bearer <WIZARD_ADMIN_TOKEN>`` (RFC 6750).

        No token, or another scheme: 401 with ``WWW-Authenticate: Bearer``
        (RFC 6750 §3.1: no error code when no credentials were sent). A token
        that does not match, whatever its bytes: 401 ``invalid_token``. The
        compare runs in constant time on bytes (header values are latin-1 by
        PEP 3333, so any byte is safe). With no token configured on the node
        the routes are off for everyone: 403, as no credentials could help.

        Raises:
            Forbidden: WIZARD_ADMIN_TOKEN is empty.
            Unauthorized: the token is missing or wrong.
        """
        expected = self.settings.admin_token.encode("utf-8")
        if not expected:
            raise Forbidden("admin routes are disabled: set WIZARD_ADMIN_TOKEN on the nodes")
        scheme, _, given = request.header_bytes("Authorization").partition(b" ")
        if scheme.lower() != b"bearer" or not given.strip():
            raise Unauthorized(
                "this route needs Authorization: Bearer <WIZARD_ADMIN_TOKEN>", realm=ADMIN_REALM
            )
        if not hmac.compare_digest(given.strip(), expected):
            raise Unauthorized(
                "the bearer token is not this cluster's WIZARD_ADMIN_TOKEN",
                realm=ADMIN_REALM,
                error="invalid_token",
            )

    def openapi(self, request: Request) -> Response:
        """``GET /openapi.json``: the OpenAPI 3.1 description of these routes."""
        return Response(200, OPENAPI_PATH.read_bytes(), {"Content-Type": "application/json"})

    # --- the route table --------------------------------------------------

    def routes(self) -> list[Route]:
        """Every route of the API, in one list. ``params``: the query
        arguments a route uses; any other, or one given twice, is a 400."""
        return [
            Route("GET", "/", self.index, params=None),
            Route("GET", "/static/<name>", self.static, params=None),
            Route("GET", "/whoami", self.whoami),
            Route("GET", "/healthz", self.healthz),
            Route("GET", "/readyz", self.readyz),
            Route("GET", "/valkey_test", self.valkey_test),
            Route("GET", "/add", self.add, params=("a", "b")),
            Route("POST", "/task", self.submit, params=TASK_FIELDS),
            Route("GET", "/tasks", self.recent_tasks, params=("limit",)),
            Route("GET", "/tasks/<task_id>/status", self.task_status),
            Route("GET", "/cluster", self.cluster),
            Route("GET", "/dead_letters", self.dead_letters, params=("limit",)),
            Route("POST", "/dead_letters/<task_id>/retry", self.redrive),
            Route("DELETE", "/dead_letters/<task_id>", self.discard),
            Route("GET", "/metrics", self.metrics),
            Route("GET", "/openapi.json", self.openapi),
        ]


#: The OpenAPI document, kept as a file so it reads as documentation.
OPENAPI_PATH = Path(__file__).resolve().parent / "openapi.json"


def _operand(fields: dict, name: str, json_names: frozenset[str] = frozenset()) -> queue.Number:
    """Parse one operand; in a JSON body it must be a JSON number, not text,
    and is parsed from its text by the same rules as one in a query or form
    (length, underflow, magnitude).

    Raises:
        BadRequest: the operand is invalid (the detail names it).
    """
    value = fields.get(name)
    if name in json_names and isinstance(value, str):
        raise BadRequest(
            f"operand '{name}' is the JSON string \"{value[:40]}\"; send a JSON number, "
            f'without quotes, like {{"{name}": 2}}'
        )
    if isinstance(value, JsonNumber):
        value = value.text
    try:
        return parse_operand(name, value)
    except InvalidOperand as error:
        raise BadRequest(str(error)) from None


def _weak_etag(data: object) -> str:
    """A weak entity tag (RFC 9110 §8.8.3) for JSON-able ``data``: the
    first 16 hex digits of the SHA-256 of its canonical JSON."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return f'W/"{hashlib.sha256(text.encode()).hexdigest()[:16]}"'


def _limit(raw: str) -> int:
    try:
        limit = int(raw)
    except ValueError:
        raise BadRequest(f"limit must be a whole number from 1 to {MAX_LIST_LIMIT}") from None
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise BadRequest(f"limit must be a whole number from 1 to {MAX_LIST_LIMIT}")
    return limit


def make_app(settings: Settings, client: valkey.Valkey | None = None) -> Api:
    """The WSGI application for ``settings`` (a callable :class:`Api`)."""
    return Api(settings, client)
