"""Raw-socket clients for the gateway's edge: requests from a chosen source
address, bursts sent all at once, malformed requests, half-sent requests.

Every client here binds its socket to a loopback address of its own
(127.0.0.2, 127.0.0.3, ...: Linux routes all of 127.0.0.0/8 to loopback), so
the gateway sees distinct clients, the way it would see distinct machines.
Sockets are always closed; every read has a timeout.

    >>> answer = send(gateway_port, b"GET /whoami HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n",
    ...               source="127.0.0.2")                          # doctest: +SKIP
    >>> answer.status, answer.problem["status"]                    # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import selectors
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

#: Source addresses handed out by :func:`new_address`, one per client, so a
#: test never shares a limit budget with another test.
_ADDRESSES = (f"127.0.{third}.{fourth}" for third in range(250) for fourth in range(2, 255))

#: How long a client waits for an answer, seconds: longer than any timeout of
#: the gateway (client_header_timeout 5 s, the /add read timeout 8 s).
READ_TIMEOUT = 15.0


def new_address() -> str:
    """A loopback address no earlier caller of this process got."""
    return next(_ADDRESSES)


@dataclass(frozen=True)
class Answer:
    """What the gateway sent back on one connection.

    ``status`` is None if the connection closed without an HTTP answer;
    ``closed`` is True if the gateway closed (or reset) the connection within
    the read timeout; ``seconds`` is how long it took, from sending.
    """

    status: int | None
    headers: dict[str, str]
    body: bytes
    closed: bool
    seconds: float

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")

    @property
    def problem(self) -> dict:
        """The body as an RFC 9457 problem document.

        Raises:
            AssertionError: it is not application/problem+json JSON.
        """
        assert self.content_type == "application/problem+json", (self.status, self.headers)
        return json.loads(self.body)


def parse(raw: bytes, closed: bool, seconds: float) -> Answer:
    """Split the first HTTP/1.1 answer in ``raw`` into status, headers (names
    lowercased) and body (as far as Content-Length says)."""
    head, _, rest = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        return Answer(None, {}, raw, closed, seconds)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", len(rest)))
    return Answer(int(parts[1]), headers, rest[:length], closed, seconds)


def connect(port: int, source: str, host: str = "127.0.0.1") -> socket.socket:
    """A TCP connection to ``host:port`` from the address ``source``."""
    conn = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    conn.bind((source, 0))
    conn.settimeout(READ_TIMEOUT)
    conn.connect((host, port))
    return conn


def read_all(conn: socket.socket, deadline: float) -> tuple[bytes, bool]:
    """Read until the peer closes or ``deadline`` (time.monotonic) passes.
    Returns (bytes, closed by the peer)."""
    received = b""
    while time.monotonic() < deadline:
        conn.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = conn.recv(65536)
        except TimeoutError:
            # Nothing more within the deadline: the connection is left open.
            return received, False
        except ConnectionResetError:
            # The gateway reset the connection (reset_timedout_connection).
            return received, True
        if not chunk:
            return received, True
        received += chunk
    return received, False


def send(port: int, request: bytes, *, source: str, timeout: float = READ_TIMEOUT) -> Answer:
    """Send ``request`` bytes as they are on a new connection from ``source``
    and read until the gateway closes it (send ``Connection: close`` to get
    that at once) or ``timeout`` seconds pass."""
    started = time.monotonic()
    with connect(port, source) as conn:
        conn.sendall(request)
        raw, closed = read_all(conn, started + timeout)
    return parse(raw, closed, time.monotonic() - started)


def get(path: str, host: str = "gateway", **headers: str) -> bytes:
    """A GET request with ``Connection: close`` and extra headers."""
    return request("GET", path, host=host, **headers)


def request(method: str, path: str, body: bytes = b"", host: str = "gateway", **headers) -> bytes:
    """An HTTP/1.1 request with ``Connection: close`` as bytes (header names
    from keyword arguments: ``X_Forwarded_For`` is ``X-Forwarded-For``)."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Connection: close"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def burst(port: int, requests: list[bytes], *, source: str) -> list[Answer]:
    """Open one connection per request from ``source``, then send every
    request at once (within a few milliseconds), then read every answer: the
    way a burst looks to the gateway, which a thread pool cannot produce."""
    conns = [connect(port, source) for _ in requests]
    try:
        started = time.monotonic()
        for conn, data in zip(conns, requests, strict=True):
            conn.sendall(data)
        answers = []
        for conn in conns:
            raw, closed = read_all(conn, started + READ_TIMEOUT)
            answers.append(parse(raw, closed, time.monotonic() - started))
        return answers
    finally:
        for conn in conns:
            conn.close()


@dataclass
class HalfOpen:
    """Connections that sent part of a request and then nothing more (the
    slowloris attack), from one source address. Close them with close()."""

    conns: list[socket.socket] = field(default_factory=list)

    def open(self, port: int, source: str, count: int, partial: bytes) -> None:
        """Open ``count`` connections from ``source`` and send ``partial``
        on each (a request line and some headers, never the blank line)."""
        for _ in range(count):
            conn = connect(port, source)
            self.conns.append(conn)
            conn.sendall(partial)

    def trickle(self) -> None:
        """Send one more header line on each connection, as a slowloris
        does to keep them open (nginx restarts its header timeout on every
        read)."""
        for conn in self.conns:
            conn.sendall(b"X-Slow: 1\r\n")

    def closed_by_gateway(self, timeout: float) -> int:
        """Wait up to ``timeout`` seconds for the gateway to close them;
        returns how many it closed (read end of stream, or a reset)."""
        closed = 0
        selector = selectors.DefaultSelector()
        for conn in self.conns:
            conn.setblocking(False)
            selector.register(conn, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        with selector:
            while closed < len(self.conns) and time.monotonic() < deadline:
                for key, _ in selector.select(timeout=max(0.0, deadline - time.monotonic())):
                    if _eof(key.fileobj):
                        selector.unregister(key.fileobj)
                        closed += 1
        return closed

    def close(self) -> None:
        for conn in self.conns:
            conn.close()
        self.conns.clear()


def _eof(conn: socket.socket) -> bool:
    """True if ``conn`` (readable, non-blocking) reached its end: the peer
    closed or reset it. Any bytes before that (an error page) are skipped."""
    try:
        return conn.recv(65536) == b""
    except ConnectionResetError:
        # A reset ends the connection too.
        return True
    except BlockingIOError:
        # Spurious wake-up: nothing to read yet.
        return False


@contextlib.contextmanager
def half_open(port: int, source: str, count: int, partial: bytes) -> Iterator[HalfOpen]:
    """:class:`HalfOpen` connections, all closed on the way out."""
    held = HalfOpen()
    try:
        held.open(port, source, count, partial)
        yield held
    finally:
        held.close()


def percentile(values: list[float], fraction: float) -> float:
    """The ``fraction`` (0..1) quantile of ``values``, nearest rank."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def counts(answers: list[Answer]) -> dict[int | None, int]:
    """How many answers had each status."""
    found: dict[int | None, int] = {}
    for answer in answers:
        found[answer.status] = found.get(answer.status, 0) + 1
    return found


def unique(prefix: str) -> Iterator[str]:
    """``prefix-1``, ``prefix-2``, ... (request ids, idempotency keys)."""
    return (f"{prefix}-{n}" for n in itertools.count(1))


@dataclass(frozen=True)
class Malformed:
    """One malformed request: a name, its bytes, and the statuses that are a
    correct answer (every one of them with a problem document)."""

    name: str
    data: bytes
    statuses: frozenset[int]


def _bad(name: str, data: bytes, *statuses: int) -> Malformed:
    return Malformed(name, data, frozenset(statuses))


_OK_HEAD = b"GET /whoami HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n"

#: Requests the gateway must refuse (or pass on, where a node answers them
#: correctly), each with a problem document and a closed connection; none may
#: get a 5xx except 501 (a transfer coding nginx cannot read) and 505 (an
#: HTTP version it does not speak), which are the right answers.
MALFORMED: tuple[Malformed, ...] = (
    # Framing.
    _bad("transfer-encoding gzip, chunked", b"POST /task HTTP/1.1\r\nHost: g\r\n"
         b"Transfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n0\r\n\r\n", 501),
    _bad("transfer-encoding and content-length", b"POST /task HTTP/1.1\r\nHost: g\r\n"
         b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
         b"0\r\n\r\n", 400),
    _bad("two different content-lengths", b"POST /task HTTP/1.1\r\nHost: g\r\n"
         b"Content-Length: 1\r\nContent-Length: 2\r\nConnection: close\r\n\r\nab", 400),
    _bad("negative content-length", b"POST /task HTTP/1.1\r\nHost: g\r\n"
         b"Content-Length: -1\r\nConnection: close\r\n\r\n", 400),
    _bad("chunk size not hex", b"POST /task HTTP/1.1\r\nHost: g\r\n"
         b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\nab\r\n0\r\n\r\n", 400),
    _bad("body over the gateway limit", b"POST /task HTTP/1.1\r\nHost: g\r\n"
         b"Content-Length: 1000000\r\nConnection: close\r\n\r\n", 413),
    _bad("no host header in HTTP/1.1", b"GET /whoami HTTP/1.1\r\nConnection: close\r\n\r\n", 400),
    _bad("two host headers", b"GET /whoami HTTP/1.1\r\nHost: a\r\nHost: b\r\n"
         b"Connection: close\r\n\r\n", 400),
    # The request line.
    _bad("not http at all (a TLS hello)",
         b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n", 400),
    _bad("a request line of spaces", b"   \r\n\r\n", 400),
    _bad("a lowercase method", b"get /whoami HTTP/1.1\r\nHost: g\r\n"
         b"Connection: close\r\n\r\n", 400),
    _bad("a control byte in the path", b"GET /who\x01ami HTTP/1.1\r\nHost: g\r\n"
         b"Connection: close\r\n\r\n", 400),
    _bad("a space in the path", b"GET /who ami HTTP/1.1\r\nHost: g\r\n"
         b"Connection: close\r\n\r\n", 400),
    _bad("an unknown http version", b"GET /whoami HTTP/3.0\r\nHost: g\r\n\r\n", 505),
    _bad("a uri over the buffers", b"GET /whoami?" + b"a" * 70000 + b" HTTP/1.1\r\nHost: g\r\n"
         b"Connection: close\r\n\r\n", 414),
    # Methods.
    _bad("TRACE", b"TRACE /whoami HTTP/1.1\r\nHost: g\r\nConnection: close\r\n\r\n", 405),
    _bad("a made-up method", b"FOO /whoami HTTP/1.1\r\nHost: g\r\nConnection: close\r\n\r\n", 405),
    _bad("CONNECT", b"CONNECT gateway:443 HTTP/1.1\r\nHost: gateway:443\r\n"
         b"Connection: close\r\n\r\n", 400, 405),
    # Headers.
    _bad("a NUL byte in a header value", _OK_HEAD + b"X-Note: a\x00b\r\n\r\n", 400),
    # Other control bytes in a header value pass nginx, which checks names,
    # not values: the node's HTTP server refuses them (wizard/server.py).
    _bad("a control byte in a header value", _OK_HEAD + b"X-Note: a\x01b\r\n\r\n", 400),
    _bad("a DEL byte in a header value", _OK_HEAD + b"X-Note: a\x7fb\r\n\r\n", 400),
    # nginx drops a header line it cannot read (ignore_invalid_headers) and
    # serves the rest of the request, as RFC 9110 section 5.1 allows.
    _bad("a header line without a colon", _OK_HEAD + b"X-Note\r\n\r\n", 200, 400),
    _bad("a header line over the buffers",
         _OK_HEAD + b"X-Note: " + b"a" * 20000 + b"\r\n\r\n", 431),
    _bad("headers over the buffers together", _OK_HEAD
         + b"".join(b"X-Note-%d: %s\r\n" % (n, b"a" * 4000) for n in range(12)) + b"\r\n", 431),
    # Paths the gateway keeps to itself.
    _bad("the gateway's own problem pages", b"GET /_problems/bad-gateway.json HTTP/1.1\r\n"
         b"Host: g\r\nConnection: close\r\n\r\n", 404),
)  # fmt: skip
