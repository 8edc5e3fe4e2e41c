"""Settings: every knob of a node, read once from the environment (12-factor).

This is the only module that reads ``os.environ``. Everything else receives a
frozen :class:`Settings` and passes it on as a plain argument, so a worker
process started with ``spawn`` gets exactly the settings its supervisor had::

    >>> settings = Settings.from_env({"WIZARD_WORKERS": "2"})
    >>> settings.workers
    2

An invalid value stops the program at start with one line naming the
variable (:class:`ConfigError`).
"""

from __future__ import annotations

import importlib.util
import ipaddress
import math
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from enum import Enum

#: Networks a node trusts to say who the client is (``X-Forwarded-For``,
#: ``X-Real-IP``) unless ``WIZARD_TRUSTED_PROXIES`` says otherwise: loopback
#: (the local cluster's nginx) and the private ranges docker compose and
#: Kubernetes give their gateways (RFC 1918; IPv6 loopback and ULA, RFC 4193).
DEFAULT_TRUSTED_PROXIES = "127.0.0.0/8,::1/128,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fc00::/7"


class ConfigError(ValueError):
    """Raised when an environment variable holds a value a node cannot use.

    The message is one sentence that names the variable and what it expects.
    """


def _integer(minimum: int, maximum: int) -> Callable[[str, str], int]:
    def parse(name: str, raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
        if not minimum <= value <= maximum:
            raise ConfigError(f"{name} must be between {minimum} and {maximum}, got {value}")
        return value

    return parse


def _seconds(minimum: float, maximum: float) -> Callable[[str, str], float]:
    def parse(name: str, raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{name} must be a number of seconds, got {raw!r}") from None
        if not math.isfinite(value) or not minimum <= value <= maximum:
            raise ConfigError(
                f"{name} must be between {minimum:g} and {maximum:g} seconds, got {raw!r}"
            )
        return value

    return parse


def _rate(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be requests per second (0 = off), got {raw!r}") from None
    if not math.isfinite(value) or not 0 <= value <= 1_000_000:
        raise ConfigError(f"{name} must be between 0 (off) and 1000000 per second, got {raw!r}")
    return value


def _boolean(name: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{name} must be 1 or 0 (true/false), got {raw!r}")


def _choice(*allowed: str) -> Callable[[str, str], str]:
    def parse(name: str, raw: str) -> str:
        value = raw.strip().lower()
        if value not in allowed:
            raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {raw!r}")
        return value

    return parse


def _valkey_url(name: str, raw: str) -> str:
    schemes = ("valkey://", "valkeys://", "redis://", "rediss://", "unix://")
    if not raw.startswith(schemes):
        raise ConfigError(f"{name} must be a URL like valkey://host:6379/0, got {raw!r}")
    return raw


def _sentinels(name: str, raw: str) -> tuple[str, ...]:
    addresses = tuple(part.strip() for part in raw.split(",") if part.strip())
    for address in addresses:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(
                f"{name} must list sentinels as host:port,host:port, got {address!r} in {raw!r}"
            )
    return addresses


class DurableAck(str, Enum):
    """What a ``202 Accepted`` waits for (``WIZARD_DURABLE_ACK``).

    ``OFF`` (``0``): Valkey has the task in memory; a crash of Valkey may lose
    the last second (``appendfsync everysec``). ``AOF`` (``aof``, or ``1`` as
    before): the primary has written it to its append-only file (WAITAOF), so
    it survives a restart of that server. ``REPLICA`` (``replica``): that, and
    a replica has it too (WAIT 1), so it survives a failover to the replica
    the sentinels promote (they pick the one with the most data)."""

    OFF = "0"
    AOF = "aof"
    REPLICA = "replica"

    def __bool__(self) -> bool:
        """False only for OFF, so ``if settings.durable_ack:`` reads as
        "a 202 waits for something" (a str Enum is otherwise always true)."""
        return self is not DurableAck.OFF


def _durable_ack(name: str, raw: str) -> DurableAck:
    value = raw.strip().lower()
    aliases = {"1": "aof", "true": "aof", "yes": "aof", "on": "aof"}
    aliases.update({"false": "0", "no": "0", "off": "0", "": "0"})
    try:
        return DurableAck(aliases.get(value, value))
    except ValueError:
        raise ConfigError(f"{name} must be 0, aof (or 1) or replica, got {raw!r}") from None


def _node_id(name: str, raw: str) -> str:
    value = raw.strip()
    if not value or len(value) > 64 or not all(c.isalnum() or c in "-_." for c in value):
        raise ConfigError(f"{name} must be 1-64 letters, digits, '-', '_' or '.', got {raw!r}")
    return value


def _text(name: str, raw: str) -> str:
    return raw


def _readable_file(name: str, raw: str) -> str:
    if raw and not os.access(raw, os.R_OK):
        raise ConfigError(f"{name} must name a file this user can read, got {raw!r}")
    return raw


def _hostname(name: str, raw: str) -> str:
    value = raw.strip().removeprefix("https://").rstrip("/")
    if value and not all(c.isalnum() or c in "-." for c in value):
        raise ConfigError(f"{name} must be like myteam.cloudflareaccess.com, got {raw!r}")
    return value


def _http_url(name: str, raw: str) -> str:
    if raw and not raw.startswith(("https://", "http://")):
        raise ConfigError(f"{name} must be an https:// URL, got {raw!r}")
    return raw


def _networks(name: str, raw: str) -> str:
    """A comma-separated list of addresses or CIDR networks; kept as text
    (the frozen settings stay plain strings for child processes), checked here."""
    for part in raw.split(","):
        if not part.strip():
            continue
        try:
            ipaddress.ip_network(part.strip(), strict=False)
        except ValueError:
            raise ConfigError(
                f"{name} must be addresses or networks separated by commas, "
                f"like 127.0.0.0/8,10.0.0.0/8; {part.strip()!r} is neither"
            ) from None
    return ",".join(part.strip() for part in raw.split(",") if part.strip())


@dataclass(frozen=True)
class Settings:
    """Everything a node needs to know, with units in the names or comments.

    Build it with :meth:`from_env`; tests build it directly with keywords.
    """

    #: Where the shared state lives (``VALKEY_URL``).
    valkey_url: str = "valkey://localhost:6379/0"
    #: Sentinels to ask where the primary is, as ``host:port`` strings
    #: (``VALKEY_SENTINELS``, comma-separated); empty: use ``valkey_url``'s
    #: host directly. With sentinels, ``valkey_url`` gives only db/password.
    valkey_sentinels: tuple[str, ...] = ()
    #: The name the sentinels monitor the primary under
    #: (``VALKEY_SENTINEL_MASTER``).
    valkey_sentinel_master: str = "wizard"
    #: This node's identity, shown in every JSON response (``WIZARD_NODE_ID``;
    #: defaults to the hostname, which is the container id under compose).
    node_id: str = "node-1"
    #: TCP port of the HTTP API (``WIZARD_PORT``).
    port: int = 8000
    #: Address the HTTP API binds to (``WIZARD_HOST``).
    host: str = "0.0.0.0"
    #: Consumer processes per node (``WIZARD_WORKERS``).
    workers: int = 1
    #: Request threads of the API process (``WIZARD_THREADS``).
    threads: int = 8
    #: Simulated CPU cost of one operation, seconds (``WIZARD_WORK_SECONDS``).
    work_seconds: float = 2.0
    #: How long a finished task stays readable, seconds (``WIZARD_RESULT_TTL``).
    result_ttl: int = 86400
    #: How long a worker may take to finish its task after SIGTERM, seconds
    #: (``WIZARD_GRACE_SECONDS``); past it the task goes back to the queue.
    grace_seconds: float = 10.0
    #: Python logging level name (``WIZARD_LOG_LEVEL``).
    log_level: str = "info"
    #: A worker's claim on a task lasts this long unless renewed, seconds
    #: (``WIZARD_LEASE_SECONDS``); a worker silent for longer is dead.
    lease_seconds: float = 10.0
    #: Attempts before a task whose workers keep dying is dead-lettered
    #: (``WIZARD_MAX_ATTEMPTS``).
    max_attempts: int = 3
    #: Longest one operation may run, seconds (``WIZARD_TASK_TIMEOUT``).
    task_timeout: float = 30.0
    #: First retry delay; each later retry doubles it (with jitter), seconds
    #: (``WIZARD_RETRY_BASE_SECONDS``).
    retry_base_seconds: float = 0.5
    #: How consumers take tasks (``WIZARD_FETCH``): ``blmove`` is the reliable
    #: queue; ``brpop`` is the original design that can lose tasks (teaching).
    fetch: str = "blmove"
    #: What a 202 waits for: nothing, the append-only file, or that and a
    #: replica (``WIZARD_DURABLE_ACK``: 0, aof or 1, replica; see DurableAck).
    durable_ack: DurableAck = DurableAck.OFF
    #: Bearer token for the dead-letter admin routes; empty means refused
    #: (``WIZARD_ADMIN_TOKEN``).
    admin_token: str = ""
    #: Enables what the chaos suite uses to break a node on purpose
    #: (``WIZARD_CHAOS_OPERATIONS``): the ``crash`` operation, which kills its
    #: worker, and the one-shot fault switches ``chaos:fault:<node>:<thread>``
    #: read by the heartbeat, worker, scheduler and API threads
    #: (:func:`wizard.faults.inject`). Never on in production.
    chaos_operations: bool = False
    #: How long a consumer blocks on an empty queue before checking its stop
    #: flag, seconds (``WIZARD_BLOCK_SECONDS``).
    block_seconds: float = 1.0
    #: Requests per second each client may make to the routes that do work
    #: (POST /task, GET /add), shared by all nodes; 0 turns the limit off
    #: (``WIZARD_RATE_LIMIT``).
    rate_limit: float = 0.0
    #: How many requests a client may make at once above that rate
    #: (``WIZARD_RATE_BURST``).
    rate_burst: int = 20
    #: A file holding the Valkey password of the user in ``VALKEY_URL``
    #: (``VALKEY_PASSWORD_FILE``: a compose secret, a Kubernetes Secret, or
    #: the file ``make run`` writes under var/); empty: none, or in the URL.
    valkey_password_file: str = ""
    #: The Cloudflare Zero Trust team, ``myteam`` or
    #: ``myteam.cloudflareaccess.com`` (``WIZARD_ACCESS_TEAM_DOMAIN``). With
    #: ``access_aud`` it turns on the Access check of wizard/access.py.
    access_team_domain: str = ""
    #: The Access application's AUD tag (``WIZARD_ACCESS_AUD``).
    access_aud: str = ""
    #: Where the team's signing keys are, overriding the team's certs URL
    #: (``WIZARD_ACCESS_JWKS_URL``; tests serve their own).
    access_jwks_url: str = ""
    #: Peers whose ``X-Forwarded-For`` / ``X-Real-IP`` a node believes, as
    #: comma-separated addresses or CIDR networks (``WIZARD_TRUSTED_PROXIES``);
    #: empty trusts nobody. See :mod:`wizard.identity`.
    trusted_proxies: str = DEFAULT_TRUSTED_PROXIES
    #: Most tasks waiting in the queue; past it POST /task answers 503 with
    #: Retry-After ("the queue is full") instead of growing Valkey
    #: (``WIZARD_MAX_PENDING``).
    max_pending: int = 10000
    #: Request threads that may do synchronous work (GET /add) at once; must
    #: be fewer than ``threads`` so health checks always find a free thread.
    #: Past it /add answers 503 at once (``WIZARD_SYNC_SLOTS``). The work holds
    #: the interpreter lock, so N at once take about N x ``work_seconds`` each
    #: on the API's one core: 2 x 2 s leaves the gateway's 8 s read timeout
    #: for /add twice the time it needs, and adds no throughput below it.
    sync_slots: int = 2
    #: Longest a synchronous /add may compute on this node, seconds
    #: (``WIZARD_SYNC_TIMEOUT``). Past it the work stops at its next
    #: checkpoint and the caller gets a 503 pointing to POST /task, from the
    #: node, before the gateway's 8 s read timeout for /add would answer 504
    #: while the thread went on computing for nobody.
    sync_timeout: float = 7.0
    #: How long a thread of the API process may hold the interpreter lock
    #: while another waits for it, seconds (``WIZARD_SWITCH_INTERVAL``; Python's
    #: ``sys.setswitchinterval``, whose own default is 0.005). Shorter lets a
    #: health check in sooner between the turns of CPU-bound /add threads.
    switch_interval: float = 0.001
    #: Tasks a worker takes in one round trip and records in the next
    #: (``WIZARD_BATCH``): more throughput, but a dead worker's whole batch
    #: waits out its lease, and the last task of a batch starts later.
    batch: int = 1

    # Each setting: (environment variable, parser). The field order above is
    # the order of this table; from_env walks it.
    @staticmethod
    def _parsers() -> dict[str, tuple[str, Callable[[str, str], object]]]:
        return {
            "valkey_url": ("VALKEY_URL", _valkey_url),
            "valkey_sentinels": ("VALKEY_SENTINELS", _sentinels),
            "valkey_sentinel_master": ("VALKEY_SENTINEL_MASTER", _node_id),
            "node_id": ("WIZARD_NODE_ID", _node_id),
            "port": ("WIZARD_PORT", _integer(1, 65535)),
            "host": ("WIZARD_HOST", _text),
            "workers": ("WIZARD_WORKERS", _integer(0, 64)),
            "threads": ("WIZARD_THREADS", _integer(1, 256)),
            "work_seconds": ("WIZARD_WORK_SECONDS", _seconds(0, 3600)),
            "result_ttl": ("WIZARD_RESULT_TTL", _integer(1, 365 * 86400)),
            "grace_seconds": ("WIZARD_GRACE_SECONDS", _seconds(0, 3600)),
            "log_level": ("WIZARD_LOG_LEVEL", _choice("debug", "info", "warning", "error")),
            "lease_seconds": ("WIZARD_LEASE_SECONDS", _seconds(0.5, 3600)),
            "max_attempts": ("WIZARD_MAX_ATTEMPTS", _integer(1, 100)),
            "task_timeout": ("WIZARD_TASK_TIMEOUT", _seconds(0.1, 86400)),
            "retry_base_seconds": ("WIZARD_RETRY_BASE_SECONDS", _seconds(0, 3600)),
            "fetch": ("WIZARD_FETCH", _choice("blmove", "brpop")),
            "durable_ack": ("WIZARD_DURABLE_ACK", _durable_ack),
            "admin_token": ("WIZARD_ADMIN_TOKEN", _text),
            "chaos_operations": ("WIZARD_CHAOS_OPERATIONS", _boolean),
            "block_seconds": ("WIZARD_BLOCK_SECONDS", _seconds(0.05, 60)),
            "rate_limit": ("WIZARD_RATE_LIMIT", _rate),
            "rate_burst": ("WIZARD_RATE_BURST", _integer(1, 100000)),
            "valkey_password_file": ("VALKEY_PASSWORD_FILE", _readable_file),
            "access_team_domain": ("WIZARD_ACCESS_TEAM_DOMAIN", _hostname),
            "access_aud": ("WIZARD_ACCESS_AUD", _text),
            "access_jwks_url": ("WIZARD_ACCESS_JWKS_URL", _http_url),
            "trusted_proxies": ("WIZARD_TRUSTED_PROXIES", _networks),
            "max_pending": ("WIZARD_MAX_PENDING", _integer(1, 10_000_000)),
            "sync_slots": ("WIZARD_SYNC_SLOTS", _integer(1, 255)),
            "sync_timeout": ("WIZARD_SYNC_TIMEOUT", _seconds(0.1, 3600)),
            "switch_interval": ("WIZARD_SWITCH_INTERVAL", _seconds(0.0001, 0.1)),
            "batch": ("WIZARD_BATCH", _integer(1, 1000)),
        }

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the settings from ``environ`` (default ``os.environ``).

        Unset variables keep the defaults above, except ``WIZARD_NODE_ID``,
        which defaults to this machine's hostname.

        Raises:
            ConfigError: a variable is set to a value the node cannot use.
        """
        environ = os.environ if environ is None else environ
        values: dict[str, object] = {"node_id": _node_id("hostname", socket.gethostname())}
        for field, (variable, parse) in cls._parsers().items():
            raw = environ.get(variable)
            if raw is not None:
                values[field] = parse(variable, raw)
        settings = cls(**values)
        settings.check()
        return settings

    @property
    def heartbeat_seconds(self) -> float:
        """How often a worker heartbeats and renews its lease, seconds: every
        second, or three times per lease if the lease is shorter than 3 s.
        A worker silent for three beats is shown as gone on the dashboard;
        the reaper waits for its lease to expire."""
        return min(1.0, self.lease_seconds / 3)

    @property
    def access_enabled(self) -> bool:
        """True when every request but the probes must carry a valid
        Cloudflare Access token (both access settings are set)."""
        return bool(self.access_team_domain and self.access_aud)

    def check(self) -> None:
        """Check the relations between settings.

        Raises:
            ConfigError: the lease is too short to be renewed in time; only
                one of the two Access settings is set; Access is on and
                PyJWT (the ``public`` extra) is not installed; or synchronous
                work could take every request thread.
        """
        if self.block_seconds * 2 >= self.lease_seconds:
            raise ConfigError(
                "WIZARD_LEASE_SECONDS must be more than twice WIZARD_BLOCK_SECONDS, "
                f"got {self.lease_seconds:g} and {self.block_seconds:g}"
            )
        if bool(self.access_team_domain) != bool(self.access_aud):
            raise ConfigError(
                "set both WIZARD_ACCESS_TEAM_DOMAIN and WIZARD_ACCESS_AUD (or neither)"
            )
        if self.access_enabled and importlib.util.find_spec("jwt") is None:
            raise ConfigError(
                "WIZARD_ACCESS_AUD is set but PyJWT is missing; "
                "install the public extra: pip install '.[public]'"
            )
        if self.sync_slots >= self.threads:
            raise ConfigError(
                "WIZARD_SYNC_SLOTS must be fewer than WIZARD_THREADS (health checks need "
                f"a free thread), got {self.sync_slots} and {self.threads}"
            )

    @property
    def trusted_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        """``trusted_proxies`` parsed: the networks whose forwarded headers count."""
        return tuple(
            ipaddress.ip_network(part, strict=False)
            for part in self.trusted_proxies.split(",")
            if part
        )

    def to_env(self) -> dict[str, str]:
        """The settings as environment variables, to hand to a child process."""
        env = {}
        parsers = self._parsers()
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool):
                value = "1" if value else "0"
            elif isinstance(value, Enum):
                value = value.value
            elif isinstance(value, tuple):
                value = ",".join(value)
            env[parsers[field.name][0]] = str(value)
        return env


def external_valkey_url(environ: Mapping[str, str] | None = None) -> str | None:
    """The ``VALKEY_URL`` given in ``environ`` (default ``os.environ``), or
    None when it is unset: ``python -m wizard up`` then starts its own
    Valkey instead of using one that already runs.

    Raises:
        ConfigError: it is set but is not a Valkey URL.
    """
    environ = os.environ if environ is None else environ
    raw = environ.get("VALKEY_URL")
    return None if raw is None else _valkey_url("VALKEY_URL", raw)
