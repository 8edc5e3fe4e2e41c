"""Load generator: a closed-loop HTTP/1.1 client with keep-alive.

Each of ``connections`` sockets carries one request at a time: it sends the
request, reads the whole answer, and only then sends the next one (a
*closed* loop, so the rate measured is what the server sustains, not what
the client offers). All sockets are served by one event loop
(:mod:`selectors`) over raw sockets, so the client spends a few microseconds
per request and leaves the two cores to the servers under test::

    >>> request = http_request("GET", "/whoami", "127.0.0.1:8080")
    >>> result = closed_loop("127.0.0.1", 8080, request, expect=200,
    ...                      connections=16, seconds=5)            # doctest: +SKIP
    >>> round(result.rate)                                         # doctest: +SKIP
    2450

The same client drives the ceiling (hello world) and the system under test,
so their ratio is fair even though client and servers share the CPU.
"""

from __future__ import annotations

import selectors
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

#: Longest wait for the answers still in flight when the window closes, s.
DRAIN_SECONDS = 5.0

#: How often the progress callback is called, seconds.
PROGRESS_EVERY = 0.25


class LoadError(RuntimeError):
    """Raised when the server answers something the client cannot read (no
    Content-Length, a partial send) or no connection can be opened."""


@dataclass(frozen=True)
class LoadResult:
    """What one measurement saw inside its window.

    ``requests``: answers with the expected status; ``errors``: other
    statuses and connections closed mid-request; ``seconds``: length of the
    window; ``client_cpu_seconds``: CPU time the client itself used in it;
    ``answered``: every answer read, warm-up and drain included (to divide
    the servers' CPU time by).
    """

    requests: int
    errors: int
    seconds: float
    client_cpu_seconds: float
    answered: int

    @property
    def rate(self) -> float:
        """Answers with the expected status per second."""
        return self.requests / self.seconds

    @property
    def client_cores(self) -> float:
        """Share of one core the client used (0.1 = 10 % of a core)."""
        return self.client_cpu_seconds / self.seconds


def http_request(method: str, target: str, host: str) -> bytes:
    """One HTTP/1.1 request with an empty body, ready to send (bytes)."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", "User-Agent: wizard-bench"]
    if method in ("POST", "PUT", "PATCH"):
        lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


class _Connection:
    """One keep-alive socket and the bytes read on it so far."""

    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port), timeout=2)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.buffer = bytearray()
        self.in_flight = False

    def send(self, request: bytes) -> None:
        """Send the whole request (it fits the empty socket buffer).

        Raises:
            LoadError: the kernel took only part of it.
        """
        if self.sock.send(request) != len(request):
            raise LoadError("the request did not fit the socket buffer")
        self.in_flight = True

    def answers(self) -> list[tuple[int, bool]]:
        """Complete answers in the buffer, each as (status, server closes).

        Raises:
            LoadError: an answer without Content-Length (chunked).
        """
        found = []
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return found
            head = bytes(self.buffer[:end]).lower()
            length = _content_length(head)
            if len(self.buffer) < end + 4 + length:
                return found
            del self.buffer[: end + 4 + length]
            self.in_flight = False
            found.append((int(head[9:12]), b"\r\nconnection: close" in head))

    def close(self) -> None:
        self.sock.close()


def _content_length(head: bytes) -> int:
    start = head.find(b"\r\ncontent-length:")
    if start < 0:
        raise LoadError("an answer came without Content-Length; the client cannot frame it")
    end = head.find(b"\r\n", start + 2)
    return int(head[start + 17 : end if end > 0 else None])


def closed_loop(
    host: str,
    port: int,
    request: bytes,
    *,
    expect: int,
    connections: int,
    seconds: float,
    warmup: float = 1.0,
    progress: Callable[[float, int], None] | None = None,
) -> LoadResult:
    """Drive ``connections`` keep-alive connections for ``warmup + seconds``
    seconds, counting only the answers that arrive in the last ``seconds``.

    ``progress(elapsed_seconds, answers_counted)`` is called every
    PROGRESS_EVERY seconds. A connection the server closes (nginx does after
    ``keepalive_requests``) is reopened. When the window ends no new request
    is sent; answers in flight are read (up to DRAIN_SECONDS) but not counted.

    Raises:
        LoadError: see :class:`LoadError`; OSError if the port refuses.
    """
    selector = selectors.DefaultSelector()
    pool = [_Connection(host, port) for _ in range(connections)]
    started = time.perf_counter()
    window_opens = started + warmup
    window_closes = window_opens + seconds
    counted = errors = answered = 0
    cpu_at_open = None
    next_report = started

    def open_one() -> _Connection:
        fresh = _Connection(host, port)
        selector.register(fresh.sock, selectors.EVENT_READ, fresh)
        fresh.send(request)
        return fresh

    for connection in pool:
        selector.register(connection.sock, selectors.EVENT_READ, connection)
        connection.send(request)
    try:
        while True:
            now = time.perf_counter()
            if cpu_at_open is None and now >= window_opens:
                cpu_at_open = time.process_time()
            if now >= window_closes:
                break
            if progress is not None and now >= next_report:
                progress(now - started, counted)
                next_report = now + PROGRESS_EVERY
            for key, _ in selector.select(timeout=0.05):
                connection = key.data
                chunk = _receive(connection)
                in_window = window_opens <= time.perf_counter() < window_closes
                if not chunk:
                    errors += in_window and connection.in_flight
                    selector.unregister(connection.sock)
                    connection.close()
                    pool[pool.index(connection)] = open_one()
                    continue
                connection.buffer += chunk
                for status, closes in connection.answers():
                    answered += 1
                    if in_window:
                        counted += status == expect
                        errors += status != expect
                    if closes:
                        selector.unregister(connection.sock)
                        connection.close()
                        pool[pool.index(connection)] = open_one()
                    else:
                        connection.send(request)
        cpu_seconds = time.process_time() - (cpu_at_open or time.process_time())
        answered += _drain(selector, pool)
    finally:
        for connection in pool:
            connection.close()
        selector.close()
    return LoadResult(counted, errors, seconds, cpu_seconds, answered)


def _receive(connection: _Connection) -> bytes:
    """What arrived on ``connection``; b"" when the server closed it."""
    try:
        return connection.sock.recv(65536)
    except ConnectionResetError:
        # The server dropped the connection: the same as a close.
        return b""


def _drain(selector: selectors.BaseSelector, pool: list[_Connection]) -> int:
    """Read the answers still in flight, so the servers finish cleanly.
    Returns how many arrived."""
    arrived = 0
    deadline = time.perf_counter() + DRAIN_SECONDS
    while any(c.in_flight for c in pool) and time.perf_counter() < deadline:
        for key, _ in selector.select(timeout=0.05):
            connection = key.data
            chunk = _receive(connection)
            if not chunk:
                connection.in_flight = False
                continue
            connection.buffer += chunk
            arrived += len(connection.answers())
    return arrived
