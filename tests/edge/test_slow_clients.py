"""Slow clients (slowloris) cannot lock others out of the gateway: 1,100
half-sent requests from one address, kept alive by a header line every
second, while other addresses' requests are all answered; once the slow
client stops sending, the gateway closes every one of its connections
within its header timeout.
"""

from __future__ import annotations

import threading
from pathlib import Path

from tests.edge.gateway import get, half_open, new_address, send

#: Half-sent requests held open from one address (the issue's measurement).
SLOW_CONNECTIONS = 1100
#: Requests sent meanwhile by other clients, one after the other, spread
#: over a few addresses so none of them reaches its own read limit.
OTHER_REQUESTS = 100
OTHER_ADDRESSES = 5
#: A request line and one header, never the blank line that ends them.
PARTIAL = b"GET /whoami HTTP/1.1\r\nHost: gateway\r\n"


def test_1100_half_sent_requests_from_one_address_do_not_stop_other_clients(cluster):
    slow = new_address()
    others = [new_address() for _ in range(OTHER_ADDRESSES)]
    stop = threading.Event()
    with half_open(cluster.gateway_port, slow, SLOW_CONNECTIONS, PARTIAL) as held:

        def keep_alive() -> None:
            # One header line a second, bounded by the test (stop is set below).
            while not stop.wait(1.0):
                held.trickle()

        trickler = threading.Thread(target=keep_alive)
        trickler.start()
        try:
            answers = [
                send(cluster.gateway_port, get("/whoami"), source=others[n % OTHER_ADDRESSES])
                for n in range(OTHER_REQUESTS)
            ]
            # Every slow connection was still open while the others were served.
            still_held = SLOW_CONNECTIONS - held.closed_by_gateway(timeout=0)
        finally:
            stop.set()
            trickler.join()
        assert [a.status for a in answers] == [200] * OTHER_REQUESTS
        assert still_held == SLOW_CONNECTIONS
        # Silent now: each is closed within client_header_timeout (5 s).
        assert held.closed_by_gateway(timeout=20) == SLOW_CONNECTIONS
    errors = (Path(cluster.var_dir) / "logs" / "nginx-error.log").read_text()
    assert "worker_connections are not enough" not in errors
