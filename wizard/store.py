"""Store: the connection to Valkey and the name of every key the system uses.

Valkey is the only shared state. Every key name is built here, once, with a
comment giving its type and meaning, so ``grep`` finds every reader and
writer of a key::

    >>> task_key("3f2a")
    'task:3f2a'
    >>> processing_key("node-1/w1")
    'task_queue:processing:node-1/w1'

:func:`connect` is called inside each process (API process, each worker):
a Valkey connection is never shared across a fork or a spawn.
"""

from __future__ import annotations

import hashlib
import socket

import valkey
from valkey.connection import parse_url
from valkey.sentinel import (
    Sentinel,
    SentinelConnectionPool,
    SentinelManagedConnection,
    SentinelManagedSSLConnection,
)

from .config import Settings

#: list of task ids waiting for a consumer; producers LPUSH, consumers take
#: from the right, so the queue is first in, first out.
TASK_QUEUE = "task_queue"

#: sorted set of task ids waiting to be retried; score = due time (Unix
#: seconds). The scheduler moves due ids back to TASK_QUEUE.
DELAYED_QUEUE = "task_queue:delayed"

#: list of task ids that exhausted their attempts (newest first).
DEAD_LETTER_QUEUE = "dead_letter_queue"

#: list of the most recent task ids (newest first). Readers take at most
#: RECENT_LIMIT from its head, so the dashboard feed costs O(limit), never a
#: scan; the scheduler trims it to that length twice a second.
RECENT_TASKS = "tasks:recent"
RECENT_LIMIT = 200

#: hash worker id -> its last heartbeat card, JSON {"node", "pid", "started",
#: "at", "tasks_done", "task_id"} (wizard.membership.WorkerCard): every worker
#: seen within the last hour, so /cluster can show dead ones greyed out.
WORKER_REGISTRY = "workers"

#: hash process name -> JSON {"pid", "node", "role", "at"}
#: (wizard.membership.record_process): where each long-lived process of the
#: cluster runs, so /cluster can list them all. Names: "<node>/supervisor",
#: "<node>/api", "<node>/scheduler", "<node>/w<n>" (written by each node's
#: supervisor), "nginx" and "valkey" (written by the local launcher, which
#: alone knows them). "at" is when it started, Unix seconds.
PROCESS_REGISTRY = "processes"

#: string holding the node id of the one scheduler allowed to reap and
#: promote; SET NX with an expiry, so another node takes over when it dies.
SCHEDULER_LOCK = "scheduler:lock"

#: hash of one node's counters: "complete:<op>",
#: "failed:<op>", "retried", "dead_lettered", "fenced_writes". Integers,
#: only ever HINCRBY; each node counts what its own processes did (its
#: workers add their complete/failed counts once a second, flush.lua).
STATS_PREFIX = "stats:node:"

#: hash of one node's task-duration histogram: "<op>|<le>" -> count, and
#: "<op>|sum" -> total milliseconds. Added by that node's workers once a
#: second (flush.lua).
DURATION_PREFIX = "stats:duration:"

#: string per worker process (a random id of its Tally): the token of the
#: last counts flush.lua applied for it, for an hour. A flush resent after a
#: lost reply carries the same token and is not added twice.
FLUSHED_PREFIX = "stats:flushed:"

#: string per client and Idempotency-Key header value: the id of the task it
#: created, so a retried POST /task returns that task instead of making
#: another. Scoped per client: one client's key never names another's task.
IDEMPOTENCY_PREFIX = "idempotency:"

#: string per client holding its GCRA "theoretical arrival time" (Unix
#: milliseconds, Valkey's clock); expires once that time has passed.
RATE_LIMIT_PREFIX = "ratelimit:"

#: string per (node, thread) set by the chaos suite to make that thread
#: raise an unexpected error once (read only with WIZARD_CHAOS_OPERATIONS=1).
CHAOS_FAULT_PREFIX = "chaos:fault:"

#: hash per node: supervised child name -> JSON {"restarts": total since the
#: node started, "in_a_row": restarts without a 10 s run in between,
#: "exit_code": the last death's, "at": Unix seconds of the last restart}.
#: Written by the node's supervisor; /readyz and /cluster read it.
RESTARTS_PREFIX = "restarts:"

PROCESSING_PREFIX = "task_queue:processing:"
TASK_PREFIX = "task:"
HEARTBEAT_PREFIX = "worker:"


def task_key(task_id: str) -> str:
    """Hash of one task: operation, operands, status, result or error, who
    accepted and handled it, attempts (each claim adds one: the fencing
    token), ``outage_attempts`` (those whose lease ran out while Valkey was
    unreachable, not counted toward ``WIZARD_MAX_ATTEMPTS``), lease owner
    and expiry, timestamps. Expires ``WIZARD_RESULT_TTL`` seconds after the
    task ends."""
    return TASK_PREFIX + task_id


def processing_key(worker_id: str) -> str:
    """List of the ids a worker has taken and not yet finished (the reliable
    queue pattern: BLMOVE copies the id here in the same step as the pop)."""
    return PROCESSING_PREFIX + worker_id


def heartbeat_key(worker_id: str) -> str:
    """String with a TTL of one lease: present while the worker is alive."""
    return HEARTBEAT_PREFIX + worker_id


def stats_key(node_id: str) -> str:
    """Hash of one node's counters (see STATS_PREFIX)."""
    return STATS_PREFIX + node_id


def flushed_key(source: str) -> str:
    """String holding the last applied flush token of one worker process
    (see FLUSHED_PREFIX)."""
    return FLUSHED_PREFIX + source


def duration_key(node_id: str) -> str:
    """Hash holding one node's task-duration histogram (see DURATION_PREFIX)."""
    return DURATION_PREFIX + node_id


def idempotency_key(client_id: str, key: str) -> str:
    """String naming the task created by a client's Idempotency-Key;
    expires after a day, or sooner: never after its task (see
    IDEMPOTENCY_PREFIX and ``queue.submit_once``). ``client_id`` (an address
    or a verified Access identity) enters as 16 hex digits of its SHA-256,
    so every key has the same shape whatever characters the identity has:
    ``idempotency:<client hash>:<key>``."""
    scope = hashlib.sha256(client_id.encode()).hexdigest()[:16]
    return f"{IDEMPOTENCY_PREFIX}{scope}:{key}"


def chaos_fault_key(node_id: str, thread: str) -> str:
    """The chaos suite's one-shot fault switch for ``thread`` (``heartbeat``,
    ``worker``, ``scheduler``, ``api``) of ``node_id`` (see CHAOS_FAULT_PREFIX)."""
    return f"{CHAOS_FAULT_PREFIX}{node_id}:{thread}"


def restarts_key(node_id: str) -> str:
    """Hash of one node's restarts of its children (see RESTARTS_PREFIX)."""
    return RESTARTS_PREFIX + node_id


def rate_limit_key(client_id: str) -> str:
    """The rate limiter's key for one client (see RATE_LIMIT_PREFIX)."""
    return RATE_LIMIT_PREFIX + client_id


#: Error replies meaning "this server will not take that write now": a replica
#: (READONLY: e.g. an old primary demoted by a failover), a primary without
#: enough replicas in reach (NOREPLICAS: ``min-replicas-to-write``), a replica
#: cut off from its primary (MASTERDOWN). Valkey did nothing with the command.
REFUSED_BY_ROLE = ("READONLY", "NOREPLICAS", "MASTERDOWN")


class PrimaryUnavailable(valkey.ConnectionError):
    """Raised when the server refuses a command because it is not, or no
    longer, a primary allowed to write (see REFUSED_BY_ROLE). Nothing was
    written. It is a ``valkey.ConnectionError`` on purpose: every caller
    already treats that as "Valkey is away for a moment" (the API answers
    503 with Retry-After, a worker backs off and tries again), and the
    connection is closed, so the next command asks Sentinel for the primary
    again and lands on the new one after a failover."""


def _refused_by_role(error: valkey.ResponseError) -> bool:
    if isinstance(error, valkey.exceptions.ReadOnlyError):
        return True
    words = str(error).replace("-", " ").split()
    return any(code in words for code in REFUSED_BY_ROLE)


class _RoleAware:
    """Connection mixin: a reply in REFUSED_BY_ROLE closes the connection
    and raises :class:`PrimaryUnavailable` instead of a ResponseError. Inside
    a MULTI or a pipeline too, so a transaction refused at a demoted server
    never looks like a bug (a 500) to the caller."""

    def read_response(self, *args, **kwargs):
        try:
            return super().read_response(*args, **kwargs)
        except valkey.ResponseError as error:
            if not _refused_by_role(error):
                raise
            # The write was refused, not done: drop this socket, say "away".
            self.disconnect()
            raise PrimaryUnavailable(f"{self.host}:{self.port} refused: {error}") from None


class PrimaryConnection(_RoleAware, valkey.Connection):
    """A plain TCP connection to the one Valkey named by VALKEY_URL."""


class PrimarySSLConnection(_RoleAware, valkey.SSLConnection):
    """The same over TLS (a ``valkeys://`` or ``rediss://`` URL)."""


class PrimaryUnixConnection(_RoleAware, valkey.UnixDomainSocketConnection):
    """The same over a Unix socket (a ``unix://`` URL)."""


class _DropsIdlePeers:
    """Sentinel connection mixin: when this connection finds the primary
    gone (cannot connect, connection error, socket timeout, or a refusal by
    role), the
    pool's idle connections are closed too. They were opened to the same
    server, so each would otherwise fail on its own next use, one socket
    timeout after another (a killed container or a pulled cable sends no
    reset); closed, each asks the sentinels again as it reconnects and
    lands on the new primary at once. Connections in use by other threads
    are left to find out for themselves."""

    def connect(self):
        try:
            return super().connect()
        except (valkey.ConnectionError, valkey.TimeoutError):
            # The primary the sentinels name refuses or does not answer.
            self._drop_idle_peers()
            raise

    def send_packed_command(self, *args, **kwargs):
        try:
            return super().send_packed_command(*args, **kwargs)
        except (valkey.ConnectionError, valkey.TimeoutError):
            # The primary is unreachable: its other sockets are no better.
            self._drop_idle_peers()
            raise

    def read_response(self, *args, **kwargs):
        try:
            return super().read_response(*args, **kwargs)
        except (valkey.ConnectionError, valkey.TimeoutError):
            # Gone, frozen, or no longer primary (PrimaryUnavailable).
            self._drop_idle_peers()
            raise

    def _drop_idle_peers(self) -> None:
        pool = self.connection_pool.connection_pool_ref()
        if pool is not None:
            pool.disconnect(inuse_connections=False)


class SentinelPrimaryConnection(_DropsIdlePeers, _RoleAware, SentinelManagedConnection):
    """A connection to whichever server the sentinels call the primary; it
    asks them again each time it (re)connects (valkey-py's Sentinel support).
    valkey-py itself turns READONLY into a reconnect; we add NOREPLICAS and
    MASTERDOWN, and close the pool's idle connections with it."""


class SentinelPrimarySSLConnection(_DropsIdlePeers, _RoleAware, SentinelManagedSSLConnection):
    """The same over TLS (a ``valkeys://`` VALKEY_URL with sentinels)."""


#: The role-aware class for each kind of connection a URL can ask for.
ROLE_AWARE = {
    valkey.Connection: PrimaryConnection,
    valkey.SSLConnection: PrimarySSLConnection,
    valkey.UnixDomainSocketConnection: PrimaryUnixConnection,
}

#: How much longer than its longest blocking command a client waits for a
#: reply before calling Valkey frozen, seconds. A blocking pop that returns
#: ``None`` on an empty queue must never look like a timeout; on a busy
#: 2-core machine a process can be kept off the CPU for more than a second,
#: and half a second of margin was seen to fail there while idle.
SOCKET_TIMEOUT_MARGIN = 2.0

#: How long to wait for a TCP connection to Valkey, seconds.
CONNECT_TIMEOUT = 1.0

#: TCP keepalive on every TCP connection to Valkey (Linux socket options):
#: the first probe after KEEPALIVE_IDLE seconds of silence, then one every
#: KEEPALIVE_INTERVAL seconds, and the connection is dead after
#: KEEPALIVE_PROBES unanswered ones. A pooled connection to a server that
#: vanished without a reset (a killed container, a pulled cable) is so
#: known dead within about 4 s even while idle, and the pool replaces it
#: when it is next taken, instead of a command waiting out its socket
#: timeout on it. Probes are answered by the server's kernel, so a server
#: that is only slow (frozen, loading, paused) keeps its connections.
KEEPALIVE_IDLE = 1
KEEPALIVE_INTERVAL = 1
KEEPALIVE_PROBES = 3

#: Longest a command's bytes may stay unacknowledged by the server's kernel
#: before the connection is given up, milliseconds (TCP_USER_TIMEOUT): a
#: write to a vanished server fails this fast instead of being retransmitted
#: for minutes. Like the probes, a frozen server's kernel still acknowledges.
UNACKED_TIMEOUT_MS = 3000


def keepalive_options() -> dict:
    """valkey-py's ``socket_keepalive`` options for a TCP connection (empty
    where the platform lacks the Linux names)."""
    wanted = {
        "TCP_KEEPIDLE": KEEPALIVE_IDLE,
        "TCP_KEEPINTVL": KEEPALIVE_INTERVAL,
        "TCP_KEEPCNT": KEEPALIVE_PROBES,
        "TCP_USER_TIMEOUT": UNACKED_TIMEOUT_MS,
    }
    options = {
        getattr(socket, name): value for name, value in wanted.items() if hasattr(socket, name)
    }
    return {"socket_keepalive": True, "socket_keepalive_options": options}


def connect(settings: Settings, *, blocking_seconds: float = 0.0) -> valkey.Valkey:
    """Open a client for the primary (a pool, connected lazily).

    Without sentinels: the server at ``settings.valkey_url``. With
    ``settings.valkey_sentinels``: the primary that those sentinels name for
    ``settings.valkey_sentinel_master``, found through valkey-py's own
    ``valkey.sentinel.Sentinel.master_for``; the database number and password
    still come from ``valkey_url``. After a failover, the next command on a
    broken or demoted connection reconnects to the new primary: no restart.

    ``blocking_seconds`` is the longest a command of this client may wait
    on the server (BLMOVE's timeout, WAITAOF's). The socket timeout is
    SOCKET_TIMEOUT_MARGIN (2 s) longer, so a blocking pop returns ``None`` on
    an empty queue rather than raising ``TimeoutError`` even on a loaded
    machine; a frozen server is noticed within that margin (the API then
    answers 503), a stopped one at once (connection refused), and one that
    vanished without a reset by TCP keepalive and TCP_USER_TIMEOUT within
    seconds (KEEPALIVE_IDLE...), even on a connection idle in the pool.
    With sentinels, a connection that finds the primary gone closes the
    pool's idle ones too, so every next command asks the sentinels afresh.

    The user is the one in the URL (``valkey://wizard@valkey:6379/0``); its
    password comes from ``settings.valkey_password_file`` when that is set
    (a secret mounted as a file), else from the URL, so no password has to
    sit in an environment variable (ops/valkey/wizard-user.acl: what that
    user may do). With sentinels, the same user logs in to whichever server
    is primary; the sentinels themselves take no password.

    Connection errors are not retried inside the client (a write whose reply
    was lost must not be sent twice): the caller decides (the API answers
    503, a worker backs off). Raises OSError if the password file cannot be
    read.
    """
    options = {
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "socket_timeout": blocking_seconds + SOCKET_TIMEOUT_MARGIN,
        "health_check_interval": 0,
        "decode_responses": True,
    }
    password = read_password(settings.valkey_password_file)
    from_url = parse_url(settings.valkey_url)
    kind = from_url.get("connection_class", valkey.Connection)
    if kind is not valkey.UnixDomainSocketConnection:
        options.update(keepalive_options())
    if not settings.valkey_sentinels:
        return valkey.Valkey.from_url(
            settings.valkey_url, connection_class=ROLE_AWARE[kind], password=password, **options
        )
    for name in ("db", "username", "password"):
        if from_url.get(name) is not None:
            options[name] = from_url[name]
    if password is not None:
        options["password"] = password
    if kind is valkey.SSLConnection:
        options["connection_class"] = SentinelPrimarySSLConnection
    else:
        options["connection_class"] = SentinelPrimaryConnection
    sentinel = Sentinel(
        [_host_port(address) for address in settings.valkey_sentinels],
        sentinel_kwargs={"socket_connect_timeout": CONNECT_TIMEOUT, "socket_timeout": 0.5},
    )
    return sentinel.master_for(settings.valkey_sentinel_master, **options)


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def primary_info(client: valkey.Valkey) -> dict:
    """Which server this client writes to, and what it says of its replicas
    (INFO replication): ``{"primary": "host:port", "via": "sentinel" | "url",
    "role": "master", "replicas": [{"address", "state", "lag_seconds"}]}``.
    Shown by ``/cluster`` and the dashboard.

    Raises:
        valkey.ConnectionError: no primary in reach.
    """
    info = client.info("replication")
    pool = client.connection_pool
    if isinstance(pool, SentinelConnectionPool):
        host, port = pool.get_master_address()
        via = "sentinel"
    else:
        host, port = pool.connection_kwargs.get("host"), pool.connection_kwargs.get("port")
        via = "url"
    replicas = []
    for n in range(int(info.get("connected_slaves", 0))):
        replica = info.get(f"slave{n}", {})
        replicas.append(
            {
                "address": f"{replica.get('ip')}:{replica.get('port')}",
                "state": replica.get("state"),
                "lag_seconds": replica.get("lag"),
            }
        )
    return {"primary": f"{host}:{port}", "via": via, "role": info.get("role"), "replicas": replicas}


def read_password(path: str) -> str | None:
    """The password in the file ``path`` (one line; surrounding whitespace
    and the final newline ignored), or None when ``path`` is empty so the
    URL's own password, if any, is used.

    Raises:
        OSError: the file cannot be read.
    """
    if not path:
        return None
    with open(path, encoding="utf-8") as file:
        return file.read().strip()
