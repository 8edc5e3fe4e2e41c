"""Router: a small framework-free WSGI layer (PEP 3333).

Three pieces, each plain data:

- :class:`Request` wraps the WSGI environ (method, path, query, headers,
  body with a size limit, form and JSON parsing);
- :class:`Response` is a status, headers and a body;
- :class:`Router` is a table of routes. ``match()`` returns the handler and
  the path parameters, or raises :class:`NotFound` / :class:`MethodNotAllowed`.

Errors are exceptions (:class:`HTTPError` and its subclasses) rendered in
one place, :meth:`Router.dispatch`, as RFC 9457 problem details::

    >>> router = Router([Route("GET", "/tasks/<task_id>/status", lambda request, task_id: ...)])
    >>> handler, params = router.match("GET", "/tasks/abc/status")
    >>> params
    {'task_id': 'abc'}
    >>> router.match("POST", "/tasks/abc/status")
    Traceback (most recent call last):
    ...
    wizard.router.MethodNotAllowed: POST is not allowed on /tasks/abc/status; use GET
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import parse_qs

from .identity import VERIFIED_IDENTITY, Network, client_identity

log = logging.getLogger(__name__)

#: Largest request body accepted, bytes.
MAX_BODY_BYTES = 16 * 1024

#: Where the ``type`` URIs of our problem documents point (RFC 9457 §3.1.1).
PROBLEM_BASE = "https://math-wizard.example/problems/"

#: The WSGI environ key holding the identity verified by wizard/access.py
#: (an email or a subject); only the node itself ever sets it.
IDENTITY_KEY = VERIFIED_IDENTITY

#: Sent with every response of a node (and, by ops/nginx/security-headers.conf,
#: with every answer nginx makes itself). The dashboard loads its scripts and
#: styles from /static only, so the policy needs no 'unsafe-inline':
#: an injected <script> or inline handler does not run. frame-ancestors
#: 'none' forbids framing the dashboard (clickjacking); nosniff stops a
#: browser from running a JSON body as a script; no-referrer keeps task ids
#: in URLs out of other sites' logs. (CSP Level 3, W3C; RFC 7034 for framing.)
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


# --- errors ---------------------------------------------------------------


class HTTPError(Exception):
    """Base of every error a handler may raise; rendered as problem+json.

    ``detail`` is one sentence telling the client what to fix. ``headers``
    are added to the response (``Allow``, ``Retry-After``...).
    """

    status: int = 500
    slug: str = "internal-error"
    #: The problem's title; empty means the status's standard reason phrase.
    title: str = ""

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}

    def problem(self) -> dict:
        """The RFC 9457 members: type, title, status, detail."""
        return {
            "type": PROBLEM_BASE + self.slug,
            "title": self.title or HTTPStatus(self.status).phrase,
            "status": self.status,
            "detail": self.detail,
        }


class BadRequest(HTTPError):
    """Raised when the request is malformed or an operand is invalid (400)."""

    status, slug = 400, "invalid-input"


class Unauthorized(HTTPError):
    """Raised when a route needs a bearer token and the request has none, or
    one that does not match (401). Carries ``WWW-Authenticate: Bearer`` as
    RFC 6750 §3 asks, with ``error="invalid_token"`` when a token was sent."""

    status, slug = 401, "unauthorized"

    def __init__(self, detail: str, *, realm: str, error: str = "") -> None:
        challenge = f'Bearer realm="{realm}"'
        if error:
            challenge += f', error="{error}"'
        super().__init__(detail, headers={"WWW-Authenticate": challenge})


class Forbidden(HTTPError):
    """Raised when the request is understood but never allowed here, whatever
    the credentials: the admin routes with no token configured (403)."""

    status, slug = 403, "forbidden"


class NotFound(HTTPError):
    """Raised when no route or no such resource exists (404)."""

    status, slug = 404, "not-found"


class MethodNotAllowed(HTTPError):
    """Raised when the path exists but not for this method (405); carries
    the allowed methods in the ``Allow`` header (RFC 9110 §15.5.6)."""

    status, slug = 405, "method-not-allowed"

    def __init__(self, detail: str, allowed: Iterable[str]) -> None:
        self.allowed = sorted(set(allowed))
        super().__init__(detail, headers={"Allow": ", ".join(self.allowed)})


class PayloadTooLarge(HTTPError):
    """Raised when the body is longer than MAX_BODY_BYTES (413)."""

    status, slug = 413, "payload-too-large"
    # RFC 9110 §15.5.14 renamed "Request Entity Too Large" (Python's phrase).
    title = "Content Too Large"


class UnsupportedMediaType(HTTPError):
    """Raised when the body's Content-Type is not JSON or a form (415)."""

    status, slug = 415, "unsupported-media-type"


class UnprocessableContent(HTTPError):
    """Raised when a well-formed request contradicts an earlier one, such as
    an Idempotency-Key reused with other input (422)."""

    status, slug = 422, "unprocessable-content"
    # RFC 9110 §15.5.21 renamed "Unprocessable Entity" (Python's phrase).
    title = "Unprocessable Content"


class TooManyRequests(HTTPError):
    """Raised when a client exceeds its rate limit (429, with Retry-After)."""

    status, slug = 429, "too-many-requests"


class ServiceUnavailable(HTTPError):
    """Raised when a dependency (Valkey) is unreachable (503, Retry-After)."""

    status, slug = 503, "service-unavailable"

    def __init__(self, detail: str, *, retry_after: int = 1) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after)})


# --- request and response -------------------------------------------------


class Request:
    """One HTTP request, read from a WSGI ``environ``.

    ``query`` maps each name to its value (:meth:`check_query` refuses a
    name given twice). The body is read at most once, lazily, and never more
    than MAX_BODY_BYTES. ``json_names`` are the fields :meth:`fields` took
    from a JSON body (their values keep their JSON types).
    """

    def __init__(self, environ: dict, *, trusted: Iterable[Network] = ()) -> None:
        self.environ = environ
        #: Proxies whose forwarded headers name the client (see :attr:`client`).
        self.trusted = tuple(trusted)
        self.method: str = environ.get("REQUEST_METHOD", "GET").upper()
        # PEP 3333 hands the path over as bytes decoded as latin-1; undo that
        # so a non-ASCII path reads as what the client sent.
        raw_path = environ.get("PATH_INFO", "") or "/"
        self.path: str = raw_path.encode("latin-1", "replace").decode("utf-8", "replace")
        raw_query = environ.get("QUERY_STRING", "")
        #: Every value of each query argument, in order (``a=1&a=5``: two).
        self.query_lists: dict[str, list[str]] = parse_qs(raw_query, keep_blank_values=True)
        self.query: dict[str, str] = {k: v[0] for k, v in self.query_lists.items()}
        self.json_names: frozenset[str] = frozenset()
        incoming = environ.get("HTTP_X_REQUEST_ID", "")
        self.request_id: str = incoming if is_token(incoming) else uuid.uuid4().hex
        self._body: bytes | None = None

    def header(self, name: str, default: str = "") -> str:
        """A request header by name (case-insensitive)."""
        key = name.upper().replace("-", "_")
        if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            return self.environ.get(key, default)
        return self.environ.get("HTTP_" + key, default)

    @property
    def client(self) -> str:
        """Who the client is, by :func:`wizard.identity.client_identity`: the
        identity verified from its Cloudflare Access token when there is one
        (:data:`IDENTITY_KEY`, set by the API before routing), else its
        address, believing forwarded headers only from ``trusted`` proxies.
        Read when needed, so it sees an identity verified after this
        request was built."""
        return client_identity(self.environ, self.trusted)

    def header_bytes(self, name: str) -> bytes:
        """A request header's raw bytes, as the client sent them.

        PEP 3333 hands header values over as ``str`` decoded as latin-1, so
        each character is one byte; encoding back gives the bytes without
        ever failing on a non-ASCII value. Compare secrets as these bytes.
        """
        return self.header(name).encode("latin-1", "replace")

    @property
    def content_type(self) -> str:
        """The media type of the body, lowercased, without parameters."""
        return self.header("Content-Type").split(";")[0].strip().lower()

    def body(self) -> bytes:
        """The raw body, bytes.

        Raises:
            PayloadTooLarge: longer than MAX_BODY_BYTES.
            BadRequest: Content-Length is not a number.
        """
        if self._body is None:
            raw_length = self.header("Content-Length") or "0"
            try:
                length = int(raw_length)
            except ValueError:
                raise BadRequest("Content-Length must be a whole number of bytes") from None
            if length > MAX_BODY_BYTES:
                raise PayloadTooLarge(f"the body may be at most {MAX_BODY_BYTES} bytes")
            self._body = self.environ["wsgi.input"].read(length) if length > 0 else b""
        return self._body

    def check_query(self, allowed: Collection[str]) -> None:
        """Take the query string literally or refuse it: every argument must
        be one the route uses (``allowed``), given once.

        Raises:
            BadRequest: naming the argument the route does not take, or the
                one given more than once.
        """
        for name, values in self.query_lists.items():
            if name not in allowed:
                raise BadRequest(_not_taken(self, name, allowed))
            if len(values) > 1:
                shown = ", ".join(repr(value) for value in values[:4])
                raise BadRequest(
                    f"{_named(name)} is given {len(values)} times ({shown}); send it once"
                )

    def fields(self, allowed: Collection[str]) -> dict[str, object]:
        """The parameters of the request: the query string (see
        :meth:`check_query`) and the fields of a form or JSON object body,
        each taken from exactly one place.

        Raises:
            UnsupportedMediaType: a body of another content type.
            BadRequest: the body is not valid JSON, not a JSON object, has a
                key twice or a field the route does not take; or a field is
                both in the query string and in the body.
            PayloadTooLarge: see :meth:`body`.
        """
        values: dict[str, object] = dict(self.query)
        body = self.body()
        if not body:
            return values
        if self.content_type == "application/json":
            given = _json_object(body)
            self.json_names = frozenset(given)
        elif self.content_type == "application/x-www-form-urlencoded":
            given = _form(body)
        else:
            raise UnsupportedMediaType(
                "send the body as application/json or application/x-www-form-urlencoded"
            )
        for name in given:
            if name not in allowed:
                raise BadRequest(_not_taken(self, name, allowed, where="the body has"))
            if name in values:
                raise BadRequest(
                    f"{_named(name)} is given twice, in the query string and in the body; "
                    "send it in one place"
                )
        values.update(given)
        return values


def _not_taken(request: Request, name: str, allowed: Collection[str], where: str = "") -> str:
    """The sentence refusing an argument a route does not use."""
    takes = f"it takes {', '.join(allowed)}" if allowed else "it takes no arguments"
    shown = _named(name)
    prefix = f"{where} {shown}" if where else f"{shown} is not an argument of"
    route = f"{request.method} {request.path}"
    if where:
        return f"{prefix}, which {route} does not take; {takes}"
    return f"{prefix} {route}; {takes}"


def _named(name: str) -> str:
    """How an error message names the argument ``name``: ``'a'`` (quoted,
    cut at 40 characters), or ``an argument with no name`` for ''."""
    if not name:
        return "an argument with no name (an '=' with nothing before it)"
    shown = name if len(name) <= 40 else name[:40] + "..."
    return f"'{shown}'"


def _form(body: bytes) -> dict[str, str]:
    """A form body's fields, each given once.

    Raises:
        BadRequest: a field has no name (``=1``), or is given more than once.
    """
    lists = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)
    for name, values in lists.items():
        if not name:
            raise BadRequest(
                "the body has a field with no name (an '=' with nothing before it); "
                "send name=value pairs, e.g. a=1&b=2"
            )
        if len(values) > 1:
            raise BadRequest(
                f"{_named(name)} is given {len(values)} times in the body; send it once"
            )
    return {name: values[0] for name, values in lists.items()}


#: A request id or idempotency key: 1-64 ASCII letters, digits, '-', '_', '.'.
TOKEN = re.compile(r"[A-Za-z0-9._-]{1,64}")


def is_token(text: str) -> bool:
    """True if ``text`` has the shape of a request id or idempotency key
    (:data:`TOKEN`)."""
    return TOKEN.fullmatch(text) is not None


@dataclass(frozen=True)
class JsonNumber:
    """A number from a JSON body, kept as its text (RFC 8259 §6) until the
    route parses it with the same rules as a number in a query or form.

    Left to ``json.loads``, a 5000-digit integer fails with a message about
    Python's own limits, a 15000-digit fraction and ``1e-400`` quietly become
    floats (the last one 0.0); kept as text, each meets the operand rules
    (:func:`wizard.operations.parse_operand`). ``str()`` gives the text."""

    text: str

    def __str__(self) -> str:
        return self.text


#: The byte order marks json.loads would accept and RFC 8259 §8.1 forbids
#: ("Implementations MUST NOT add a byte order mark").
BYTE_ORDER_MARKS = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")


def _json_object(body: bytes) -> dict:
    """A JSON body's object, taken literally: UTF-8 only, with no byte order
    mark (RFC 8259 §8.1: json.loads would also take UTF-16 and UTF-32, with
    or without one), each key once, numbers as :class:`JsonNumber`.

    Raises:
        BadRequest: saying what to send instead.
    """
    if body.startswith(BYTE_ORDER_MARKS):
        raise BadRequest(
            "the JSON body starts with a byte order mark; send UTF-8 without one (RFC 8259)"
        )
    not_utf8 = BadRequest(
        "the JSON body is not UTF-8 (UTF-16 or another encoding?); send it as UTF-8"
    )
    if b"\x00" in body:
        # Valid UTF-8 bytes, but no JSON text holds a raw NUL: UTF-16 or -32.
        raise not_utf8
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise not_utf8 from None
    try:
        value = json.loads(
            text,
            parse_constant=_reject_constant,
            parse_int=JsonNumber,
            parse_float=JsonNumber,
            object_pairs_hook=_unique_keys,
        )
    except ValueError as error:
        raise BadRequest(f"the body is not valid JSON ({error})") from None
    except RecursionError:
        # Thousands of nested brackets: valid JSON, but no task looks like it.
        raise BadRequest("the JSON body is nested too deeply; send a flat object") from None
    if not isinstance(value, dict):
        raise BadRequest('the JSON body must be an object, like {"a": 1, "b": 2}')
    return value


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    # RFC 8259 §4: names SHOULD be unique; json.loads keeps the last silently.
    seen: dict[str, object] = {}
    for name, value in pairs:
        if name in seen:
            raise BadRequest(f"the JSON body has the key '{name}' twice; send it once")
        seen[name] = value
    return seen


def _reject_constant(name: str) -> float:
    # json.loads accepts NaN and Infinity by default; RFC 8259 does not.
    raise ValueError(f"{name} is not valid JSON")


@dataclass
class Response:
    """A status, headers and a body (bytes). Build JSON ones with :meth:`json`."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, data: dict, status: int = 200, **headers: str) -> Response:
        """A JSON response, ending with a newline (so a shell prompt starts on
        its own line after curl). NaN and Infinity are refused (ValueError):
        they are not JSON, and no response may contain them."""
        body = json.dumps(data, allow_nan=False, separators=(",", ":")).encode() + b"\n"
        return cls(status, body, {"Content-Type": "application/json", **headers})


# --- routing --------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """One line of the route table. ``pattern`` may hold ``<name>``
    segments, each matching one path segment (no ``/``). ``params`` are the
    query arguments the route uses: any other is refused (400), and so is
    one given twice; ``None`` lets any query string through (pages)."""

    method: str
    pattern: str
    handler: Callable[..., Response]
    params: tuple[str, ...] | None = ()

    def compile(self) -> re.Pattern:
        """The pattern as an anchored regular expression."""
        parts = []
        for segment in self.pattern.split("/"):
            if segment.startswith("<") and segment.endswith(">"):
                parts.append(f"(?P<{segment[1:-1]}>[^/]+)")
            else:
                parts.append(re.escape(segment))
        return re.compile("^" + "/".join(parts) + "$")


class Router:
    """A route table: matches requests to handlers and renders errors.
    ``node_id`` is added to every problem document as ``handled_by``."""

    def __init__(self, routes: list[Route], *, node_id: str = "") -> None:
        self.routes = routes
        self.node_id = node_id
        self._compiled = [(route, route.compile()) for route in routes]

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        """The route for ``method`` and ``path`` and its path parameters.

        HEAD is served by GET routes.

        Raises:
            NotFound: no route has this path.
            MethodNotAllowed: routes have this path, for other methods.
        """
        allowed = []
        for route, regex in self._compiled:
            found = regex.match(path)
            if found is None:
                continue
            if route.method == method or (method == "HEAD" and route.method == "GET"):
                return route, found.groupdict()
            allowed.append(route.method)
        if allowed:
            if "GET" in allowed:
                allowed.append("HEAD")
            usable = ", ".join(sorted(set(allowed) - {"HEAD"}))
            raise MethodNotAllowed(f"{method} is not allowed on {path}; use {usable}", allowed)
        raise NotFound(f"there is no route {path}; see /openapi.json for the routes")

    def dispatch(self, request: Request) -> tuple[Route | None, Response]:
        """Match and run a handler; render any error as problem+json.

        The only broad ``except`` of the web half: an unexpected exception is
        logged with its traceback and becomes a plain 500 problem.
        """
        route = None
        try:
            route, params = self.match(request.method, request.path)
            if route.params is not None:
                request.check_query(route.params)
            return route, route.handler(request, **params)
        except HTTPError as error:
            return route, self.problem(error)
        except Exception:
            # The WSGI boundary: a bug. Log it; never show a traceback.
            log.exception("unhandled error", extra={"request_id": request.request_id})
            return route, self.problem(HTTPError("the server failed; the error is logged"))

    def problem(self, error: HTTPError) -> Response:
        """Render an HTTPError as an RFC 9457 ``application/problem+json``."""
        body = {**error.problem(), "handled_by": self.node_id}
        response = Response.json(body, error.status, **error.headers)
        response.headers["Content-Type"] = "application/problem+json"
        return response


def start_response_for(response: Response, request: Request, start_response) -> list[bytes]:
    """Send ``response`` through WSGI ``start_response``; HEAD gets no body.
    Adds ``X-Request-ID`` and the SECURITY_HEADERS. Returns the WSGI body
    iterable."""
    headers = {**SECURITY_HEADERS, **response.headers}
    headers["X-Request-ID"] = request.request_id
    headers["Content-Length"] = str(len(response.body))
    status = f"{response.status} {HTTPStatus(response.status).phrase}"
    start_response(status, list(headers.items()))
    return [b""] if request.method == "HEAD" else [response.body]
