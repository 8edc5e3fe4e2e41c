"""Network lab: the cluster spread over "hosts" that are Linux network
namespaces on one bridge, so a host can be cut off, or its link slowed,
while everything keeps running (root only; ``ip`` from iproute2, ``ebtables``).

Every host has its own network stack (interfaces, routes, ports, loopback)
and one address; they meet on a bridge that lives in a namespace of its own,
and this machine reaches them through one veth pair (the "client" end)::

    this machine (client) 198.18.K.1 ─┐
                                      │        namespace <tag>-switch: bridge
    gateway  198.18.K.2  (nginx :80) ─┤
    valkey-1 198.18.K.11 (+ sentinel) ┤   (valkey-2, -3: .12, .13 with HA)
    node-1   198.18.K.21 (:8000)     ─┤
    node-2   198.18.K.22             ─┤
    node-3   198.18.K.23             ─┘

Addresses come from 198.18.0.0/15, the block IANA reserves for network
benchmarking (RFC 2544, listed in RFC 6890): no Internet route, no LAN, no
container runtime and no cloud uses it. Link-local 169.254.0.0/16 would do
too, but clouds serve their metadata at 169.254.169.254. Each lab takes one
/24 (K = ``lab_id``), and every name it creates starts with ``wzl<K>``, so
what a crashed run left behind is found and removed by name.

A cut is the cable pulled at the switch (:meth:`Network.cut`: the host's
bridge port goes down); the processes on the host keep running. A
partition (:meth:`Network.partition`) drops only the frames between two
groups of hosts, with ebtables rules on the bridge. Latency is
added by a relay in front of Valkey (wizard/slowlink.py), not by ``tc
netem``: kernels built without the netem qdisc (small VMs, some CI runners)
are common, and a relay runs everywhere. Traffic never leaves the
namespaces and the client end::

    >>> with Network(lab_id=42) as net:            # doctest: +SKIP
    ...     net.add_host("node-1"); net.cut("node-1"); net.heal("node-1")
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from . import acl
from .cluster import ROOT, LocalCluster
from .ha import ValkeyHA, ValkeyServer, ask
from .processes import ClusterError, Part, StopSignals, wait_until

#: The first two octets of every lab address (RFC 2544 benchmarking block).
NETWORK = "198.18"

#: Every namespace and interface of a lab starts with this and its id.
NAME_PREFIX = "wzl"

#: Last octet of each host's address in its /24.
HOST_OCTETS = {
    "client": 1,
    "gateway": 2,
    "valkey-1": 11,
    "valkey-2": 12,
    "valkey-3": 13,
    "node-1": 21,
    "node-2": 22,
    "node-3": 23,
}

#: Ports inside the namespaces: each host has its own, so fixed ones do.
GATEWAY_PORT = 80
NODE_PORT = 8000
VALKEY_PORT = 6379


class LabError(RuntimeError):
    """Raised when the lab cannot be built: not root, iproute2 missing, or
    an ``ip`` command refused. The message names the command."""


def run(command: str) -> str:
    """Run one ``ip`` command, written as in a shell (no quoting:
    the lab's names have no spaces); return its output.

    Raises:
        LabError: it failed (its stderr is in the message).
    """
    argv = command.split()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise LabError(f"{command}: {done.stderr.strip()}")
    return done.stdout


def check_tools() -> None:
    """Raises LabError unless we are root and ``ip`` and ``ebtables`` exist."""
    for tool, package in (("ip", "iproute2"), ("ebtables", "ebtables")):
        if shutil.which(tool) is None:
            raise LabError(f"{tool} not found; install {package} (make iproute2)")
    if os.geteuid() != 0:
        raise LabError("network namespaces need root: run the lab as root")


class Network:
    """The bridge, the hosts' namespaces and their links, for lab ``lab_id``
    (1-254: the third octet). :meth:`destroy` removes all of it, also what an
    earlier run with the same id left behind."""

    def __init__(self, lab_id: int) -> None:
        if not 1 <= lab_id <= 254:
            raise LabError(f"lab_id must be 1-254, got {lab_id}")
        self.lab_id = lab_id
        self.tag = f"{NAME_PREFIX}{lab_id}"
        self.switch = f"{self.tag}-switch"
        self.hosts: dict[str, int] = {}

    # --- names and addresses ------------------------------------------------

    def address(self, host: str) -> str:
        """The IPv4 address of ``host`` (e.g. ``198.18.42.21``)."""
        return f"{NETWORK}.{self.lab_id}.{HOST_OCTETS[host]}"

    def namespace(self, host: str) -> str:
        """The network namespace of ``host``."""
        return f"{self.tag}-{host}"

    def exec_prefix(self, host: str) -> list[str]:
        """Put this in front of a command to run it on ``host``."""
        return ["ip", "netns", "exec", self.namespace(host)]

    def _port(self, host: str) -> str:
        """The bridge-side end of ``host``'s link (max 15 characters)."""
        return f"{self.tag}p{HOST_OCTETS[host]}"

    # --- building ---------------------------------------------------------

    def create(self) -> None:
        """The switch namespace with its bridge, and the client end: a veth
        whose one side stays on this machine with address .1.

        Raises:
            LabError: not root, no iproute2, or a command failed.
        """
        check_tools()
        self.destroy()
        run(f"ip netns add {self.switch}")
        run(f"ip -n {self.switch} link add br0 type bridge")
        run(f"ip -n {self.switch} link set br0 up")
        client = f"{self.tag}c"
        run(f"ip link add {client} type veth peer name {self._port('client')}")
        run(f"ip link set {self._port('client')} netns {self.switch}")
        self._plug(self._port("client"))
        run(f"ip addr add {self.address('client')}/24 dev {client}")
        run(f"ip link set {client} up")

    def add_host(self, host: str) -> None:
        """A namespace for ``host``, its loopback up, and a link to the
        bridge with the host's address on its ``eth0``."""
        namespace = self.namespace(host)
        run(f"ip netns add {namespace}")
        run(f"ip -n {namespace} link set lo up")
        port = self._port(host)
        run(f"ip -n {self.switch} link add {port} type veth peer name eth0 netns {namespace}")
        self._plug(port)
        run(f"ip -n {namespace} addr add {self.address(host)}/24 dev eth0")
        run(f"ip -n {namespace} link set eth0 up")
        self.hosts[host] = HOST_OCTETS[host]

    def _plug(self, port: str) -> None:
        run(f"ip -n {self.switch} link set {port} master br0")
        run(f"ip -n {self.switch} link set {port} up")

    # --- faults -------------------------------------------------------------

    def cut(self, host: str) -> None:
        """Unplug ``host``'s cable at the switch: its bridge port goes down,
        so every packet to and from it is dropped without a word (no reset,
        no "unreachable"). Its processes keep running and keep trying; TCP
        keeps the bytes they sent and delivers them once the link heals."""
        run(f"ip -n {self.switch} link set {self._port(host)} down")

    def heal(self, host: str) -> None:
        """Plug ``host``'s cable back in."""
        run(f"ip -n {self.switch} link set {self._port(host)} up")

    def partition(self, side_a: list[str], side_b: list[str]) -> None:
        """Drop every frame between the hosts of ``side_a`` and those of
        ``side_b`` (ebtables rules on the bridge, in the switch's namespace
        only); each side still reaches everyone else."""
        bridge = f"ip netns exec {self.switch} ebtables"
        pairs = [(a, b) for a in side_a for b in side_b]
        for into, out in pairs + [(b, a) for a, b in pairs]:
            run(f"{bridge} -A FORWARD -i {self._port(into)} -o {self._port(out)} -j DROP")

    def mend(self) -> None:
        """Remove every partition (flush the bridge's FORWARD rules)."""
        run(f"ip netns exec {self.switch} ebtables -F FORWARD")

    # --- removing -----------------------------------------------------------

    def namespaces(self) -> list[str]:
        """This lab's namespaces that exist now (``ip netns list``)."""
        listed = run("ip netns list").split("\n")
        names = [line.split()[0] for line in listed if line.strip()]
        return [name for name in names if name.startswith(self.tag + "-")]

    def destroy(self) -> None:
        """Delete this lab's namespaces (their interfaces go with them, the
        client end too: its peer is in the switch). Stop the processes in
        them first, or the interfaces live on until those exit."""
        for namespace in self.namespaces():
            run(f"ip netns del {namespace}")
        with contextlib.suppress(LabError):
            # Already gone with its peer (the usual case).
            run(f"ip link del {self.tag}c")
        self.hosts.clear()

    def __enter__(self) -> Network:
        self.create()
        return self

    def __exit__(self, *exc_info) -> None:
        self.destroy()


class LabCluster(LocalCluster):
    """The local cluster on the lab's hosts: Valkey on ``valkey-1`` (or the
    HA trio on ``valkey-1..3``, a sentinel beside each server), one node per
    ``node-N`` host, nginx on ``gateway``. Load goes to :attr:`url` from this
    machine, through the client end of the bridge."""

    def __init__(
        self,
        network: Network,
        *,
        nodes: int = 3,
        workers: int = 1,
        var_dir: Path,
        node_env: dict[str, str] | None = None,
        ha: bool = False,
        slow_valkey: bool = False,
        gateway_limits: bool = True,
    ) -> None:
        super().__init__(
            gateway_port=GATEWAY_PORT,
            nodes=nodes,
            workers=workers,
            var_dir=var_dir,
            node_env=node_env,
            gateway_limits=gateway_limits,
        )
        self.network = network
        self.host = network.address("gateway")
        self.valkey_port = VALKEY_PORT
        self.node_ports = {name: NODE_PORT for name in self.node_ports}
        self.with_ha = ha
        self.valkey_hosts = [f"valkey-{n}" for n in range(1, 4 if ha else 2)]
        #: With ``slow_valkey``: the relay in front of Valkey (see
        #: :meth:`set_valkey_delay`); Valkey itself then listens one port up.
        self.relay: Part | None = None
        self.slow_valkey = slow_valkey
        self.delay_file = self.var_dir / "valkey-delay-ms"

    def node_host(self, name: str) -> str:
        return self.network.address(name)

    def command_prefix(self, name: str) -> list[str]:
        return self.network.exec_prefix(name)

    @property
    def valkey_url(self) -> str:
        """The nodes' URL (user ``wizard``; its password in the file of
        :attr:`valkey_password_file`): valkey-1, or the first primary."""
        return f"valkey://{acl.NODE_USER}@{self.network.address('valkey-1')}:{VALKEY_PORT}/0"

    @property
    def admin_url(self) -> str:
        """The admin's URL of the server the nodes write to now."""
        if self.ha is not None:
            return super().admin_url
        return self.valkey.url.replace(f":{VALKEY_PORT + 1}/", f":{VALKEY_PORT}/")

    def build(self) -> None:
        """Create the hosts this cluster needs (the network must exist)."""
        for host in ["gateway", *self.valkey_hosts, *self.node_ports]:
            self.network.add_host(host)

    def start_valkey(self) -> None:
        """One Valkey on ``valkey-1``, or the HA trio with its sentinels."""
        if self.with_ha:
            hosts = {name: self.network.address(name) for name in self.valkey_hosts}
            hosts.update({f"sentinel-{n}": hosts[f"valkey-{n}"] for n in range(1, 4)})
            wrappers = {name: self.network.exec_prefix(name) for name in self.valkey_hosts}
            wrappers.update({f"sentinel-{n}": wrappers[f"valkey-{n}"] for n in range(1, 4)})
            self.ha = ValkeyHA(
                var_dir=self.var_dir,
                hosts=hosts,
                wrappers=wrappers,
                die_with_parent=self.die_with_launcher,
            )
            self.ha.start()
            return
        address = self.network.address("valkey-1")
        self.valkey = ValkeyServer(
            "valkey",
            host=address,
            port=VALKEY_PORT + 1 if self.slow_valkey else VALKEY_PORT,
            var_dir=self.var_dir,
            wrapper=self.network.exec_prefix("valkey-1"),
            min_replicas=0,
        )
        self.valkey.die_with_parent = self.die_with_launcher
        self.valkey.start()
        if self.slow_valkey:
            self.start_relay(address)

    def start_relay(self, address: str) -> None:
        """Start the slow-link relay on Valkey's host, in front of it."""
        self.delay_file.write_text("0\n")
        argv = [
            *self.network.exec_prefix("valkey-1"),
            sys.executable,
            "-m",
            "wizard.slowlink",
            "--listen",
            f"{address}:{VALKEY_PORT}",
            "--to",
            f"{address}:{VALKEY_PORT + 1}",
            "--delay-file",
            str(self.delay_file),
        ]
        self.relay = Part("slowlink", argv, self.var_dir / "logs" / "slowlink.log")
        self.relay.die_with_parent = self.die_with_launcher
        self.extras.append(self.relay)
        self.relay.start()

        def relayed() -> bool:
            # Through the relay, logged in as the admin of the server behind.
            return bool(
                ask(
                    address,
                    VALKEY_PORT,
                    "PING",
                    username=acl.ADMIN_USER,
                    password=self.valkey.admin_password,
                )
            )

        wait_until(relayed, "slowlink", process=self.relay.process)

    def set_valkey_delay(self, milliseconds: float) -> None:
        """Make every round trip to Valkey ``milliseconds`` longer (the
        relay re-reads its file on SIGHUP). Needs ``slow_valkey``."""
        self.delay_file.write_text(f"{milliseconds:g}\n")
        self.relay.process.send_signal(signal.SIGHUP)

    def host_of(self, part_name: str) -> str:
        """The lab host a part (``valkey-2``, ``sentinel-1``, ``node-3``...) runs on."""
        return part_name.replace("sentinel-", "valkey-")

    def prepare(self) -> None:
        """Build the hosts (the ports are the hosts' own, so free).

        Raises:
            LabError: a host could not be built.
        """
        self.build()


# --- the lab from a terminal ------------------------------------------------

#: The lab id a terminal session uses: its hosts are 198.18.42.0/24.
DEFAULT_LAB_ID = 42


def _state_path(var_dir: Path) -> Path:
    return var_dir / "lab" / "lab.json"


#: What ``make netlab`` gives every node unless the environment sets it:
#: half a second of work per task and leases of 3 s, so a task held by a
#: host that is cut off for 10 s (ops/scripts/lab/01-cut-a-node-host.sh) is
#: redone elsewhere while the dashboard still shows that host grey.
NODE_SETTINGS: dict[str, str] = {
    "WIZARD_WORK_SECONDS": "0.5",
    "WIZARD_LEASE_SECONDS": "3",
    "WIZARD_BLOCK_SECONDS": "0.5",
}


def node_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """:data:`NODE_SETTINGS`, each replaced by its value in ``environ``
    (default ``os.environ``) where set."""
    environ = os.environ if environ is None else environ
    return {name: environ.get(name, value) for name, value in NODE_SETTINGS.items()}


def run_lab_up(*, lab_id: int, nodes: int, workers: int, ha: bool, var_dir: Path) -> int:
    """``python -m wizard.netlab up``: build the lab, start the cluster on
    it, print the addresses, and on Ctrl+C, SIGTERM or SIGHUP (or a part
    that fails to start, or any error) stop every process by PID and remove
    every namespace, with the links in them. Returns the exit code: 0 after
    a clean stop, 1 if the lab did not start or something was left."""
    network = Network(lab_id)
    cluster = LabCluster(
        network,
        nodes=nodes,
        workers=workers,
        var_dir=var_dir / "lab",
        node_env=node_env(),
        ha=ha,
        slow_valkey=not ha,
    )
    cluster.die_with_launcher = True
    stop = StopSignals()
    try:
        code = _serve(network, cluster, var_dir, stop)
    finally:
        # Whatever ended the lab, even an error of ours: the processes by
        # PID first (a namespace outlives its deletion while one runs in it),
        # then the namespaces, even if stopping a process failed.
        try:
            cluster.stop()
        finally:
            network.destroy()
            _state_path(var_dir).unlink(missing_ok=True)
    left = [*map(str, cluster.pids()), *network.namespaces()]
    if left:
        print(f"wizard lab: still there after the stop: {' '.join(left)}", file=sys.stderr)
        return 1
    print("stopped; nothing left running, no namespace left.")
    return code


def _serve(network: Network, cluster: LabCluster, var_dir: Path, stop: StopSignals) -> int:
    """Start the lab, print its banner, wait for a stop signal. Returns 1
    if the lab could not start (the reason printed), else 0."""
    try:
        network.create()
        cluster.start()
    except (LabError, ClusterError) as error:
        # Said in one line; the caller removes what was made.
        print(f"wizard lab: {error}", file=sys.stderr)
        return 1
    relay = cluster.relay.pid if cluster.relay else None
    _state_path(var_dir).write_text(json.dumps({"lab_id": network.lab_id, "relay_pid": relay}))
    print(_lab_banner(cluster), flush=True)
    while stop.reason is None:
        time.sleep(0.5)
    print(f"\n{stop.reason}: stopping the lab and removing its namespaces ...", flush=True)
    return 0


def _lab_banner(cluster: LabCluster) -> str:
    net = cluster.network
    # This interpreter (the one with wizard installed), as the user can type it.
    python = (
        os.path.relpath(sys.executable)
        if sys.executable.startswith(os.getcwd())
        else sys.executable
    )
    lab = f"{python} -m wizard.netlab"
    lines = ["", f"  The lab is up:  {cluster.url}/   (from this machine)", ""]
    for host in ["gateway", *cluster.valkey_hosts, *cluster.node_ports]:
        lines.append(f"  {host:<10} {net.address(host):<15} namespace {net.namespace(host)}")
    lines += [
        "",
        f"  cut a host off:     {lab} cut node-2   (heal: heal node-2)",
        f"  slow Valkey down:   {lab} delay 20     (ms; 0 = off)",
        "  run a command on a host:  ip netns exec " + net.namespace("node-1") + " ss -tn",
        "  stop: Ctrl+C",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m wizard.netlab up | cut HOST | heal HOST | delay MS | down``."""
    parser = argparse.ArgumentParser(prog="python -m wizard.netlab", description=__doc__)
    parser.add_argument("--var-dir", type=Path, default=ROOT / "var", help="default var/")
    actions = parser.add_subparsers(dest="action", required=True)
    up = actions.add_parser("up", help="build the lab and run the cluster on it")
    up.add_argument("--nodes", type=int, default=3, choices=range(1, 4), metavar="N")
    up.add_argument("--workers", type=int, default=1, choices=range(0, 9), metavar="W")
    up.add_argument("--ha", action="store_true", help="Valkey primary, 2 replicas, 3 sentinels")
    up.add_argument("--lab-id", type=int, default=DEFAULT_LAB_ID, help="third octet (1-254)")
    for name, text in (("cut", "pull a host's cable"), ("heal", "plug it back in")):
        action = actions.add_parser(name, help=text)
        action.add_argument("host", choices=sorted(HOST_OCTETS.keys() - {"client"}))
    delay = actions.add_parser("delay", help="ms added to each round trip with Valkey")
    delay.add_argument("milliseconds", type=float)
    actions.add_parser("down", help="remove what a crashed lab left behind")
    args = parser.parse_args(argv)
    if args.action == "up":
        return run_lab_up(
            lab_id=args.lab_id,
            nodes=args.nodes,
            workers=args.workers,
            ha=args.ha,
            var_dir=args.var_dir,
        )
    state_file = _state_path(args.var_dir)
    state = json.loads(state_file.read_text()) if state_file.exists() else {}
    network = Network(state.get("lab_id", DEFAULT_LAB_ID))
    try:
        return _act(args, network, state)
    except LabError as error:
        print(f"wizard lab: {error}", file=sys.stderr)
        return 1


def _act(args: argparse.Namespace, network: Network, state: dict) -> int:
    if args.action == "cut":
        network.cut(args.host)
    elif args.action == "heal":
        network.heal(args.host)
    elif args.action == "down":
        network.destroy()
    elif state.get("relay_pid") is None:
        print("wizard lab: no slow-link relay (is the lab up, without --ha?)", file=sys.stderr)
        return 1
    else:
        (args.var_dir / "lab" / "valkey-delay-ms").write_text(f"{args.milliseconds:g}\n")
        os.kill(state["relay_pid"], signal.SIGHUP)
    print(f"{args.action} done")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
