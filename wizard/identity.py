"""Client identity: who is asking, decided once per request.

Every per-client decision of a node uses the string this module returns:
the rate limit's key in Valkey, the ``client`` of each request log line and
the scope of an ``Idempotency-Key``. Deciding it in one place is what makes
those agree, and what keeps a client from choosing its own identity.

Where the answer comes from, first match wins:

1. ``environ["wizard.identity"]``: an identity an earlier WSGI middleware
   has already *verified* (for example a signed Access token in the public
   profile). Only server code can put it there; no header can.
2. The peer address (``REMOTE_ADDR``), when the peer is not a trusted proxy:
   a client talking to a node directly is its own address, whatever
   ``X-Forwarded-For`` or ``X-Real-IP`` it sends.
3. When the peer is in ``WIZARD_TRUSTED_PROXIES`` (our nginx): the last
   ``X-Forwarded-For`` hop, which is the one that proxy appended
   (``$proxy_add_x_forwarded_for``); earlier hops are the client's word and
   are ignored. Without ``X-Forwarded-For``, its ``X-Real-IP``. A value that is
   not an IP address counts as absent: the identity is then the proxy itself.

This is the rule of waitress's own ``trusted_proxy`` with
``trusted_proxy_count=1`` and ``trusted_proxy_headers={"x-forwarded-for"}``,
but with a list of networks where waitress takes one exact address or
``*`` (and, like waitress, one hop: a client inside a trusted range cannot
push an earlier hop forward)::

    >>> import ipaddress
    >>> nginx = [ipaddress.ip_network("127.0.0.0/8")]
    >>> client_identity({"REMOTE_ADDR": "127.0.0.1",
    ...                  "HTTP_X_FORWARDED_FOR": "6.6.6.6, 127.0.0.2"}, nginx)
    '127.0.0.2'
    >>> client_identity({"REMOTE_ADDR": "203.0.113.9",
    ...                  "HTTP_X_FORWARDED_FOR": "6.6.6.6"}, nginx)
    '203.0.113.9'
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

#: The WSGI environ key where a middleware puts an identity it has verified.
VERIFIED_IDENTITY = "wizard.identity"

#: The identity of a request with no peer address (an in-process call).
UNKNOWN = "unknown"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def client_identity(environ: dict, trusted: Iterable[Network]) -> str:
    """Who sent this request, as a short string (an IP address, or a
    verified identity set by middleware under :data:`VERIFIED_IDENTITY`).

    ``environ`` is the WSGI environ (PEP 3333); ``trusted`` the networks of
    proxies whose forwarded headers count (``Settings.trusted_networks``).
    Never raises: any header value, however malformed, gives an answer.
    """
    verified = environ.get(VERIFIED_IDENTITY)
    if isinstance(verified, str) and verified:
        return verified
    peer = _address(environ.get("REMOTE_ADDR", ""))
    if peer is None:
        return UNKNOWN
    if not any(peer in network for network in trusted):
        return str(peer)
    forwarded = environ.get("HTTP_X_FORWARDED_FOR", "")
    if forwarded:
        hop = _address(forwarded.rsplit(",", 1)[-1])
    else:
        hop = _address(environ.get("HTTP_X_REAL_IP", ""))
    return str(hop or peer)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``text`` as an IP address, or None if it is not one (IPv6 scope ids,
    ports and brackets are not addresses either)."""
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        # Not an address: a typo, a port, or a client's garbage.
        return None
