"""The real docker-compose.yml, run under podman by the container tests.

There is no Docker engine and no container registry on the machines these
tests run on, so the deployment runs under Debian's podman 4.3 and
podman-compose, with three differences from Docker that the tests name:

- healthchecks: podman runs them from systemd timers, which a test machine
  does not have, so a *health pump* (``python -m tests.containers.pump``,
  a background process stopped by PID) runs ``podman healthcheck run`` for
  each container at its own interval;
- start order: podman 4.3 ignores ``depends_on: condition: service_healthy``,
  so the tests wait for every service to be healthy themselves;
- Docker's embedded DNS at 127.0.0.11 does not exist: the nginx stand-in
  image forwards it to podman's DNS server (tests/containers/images/embedded-dns).

Everything a stack starts carries the label ``io.podman.compose.project=<its
project>``, a name made fresh for each stack, and is removed by id at the end::

    podman = Podman()
    with Stack(podman, profiles=("dev",)) as stack:
        stack.wait_healthy({"valkey": 1, "app": 3, "gateway": 1})
        stack.get("/whoami")
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests
import yaml

from wizard.processes import free_port

#: This folder, the repository's root, and the files the tests run.
HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
#: Laid over docker-compose.yml, in this order: what podman needs (and no
#: host ports), then what the test chooses (loopback ports, its own secrets).
OVERRIDE_FILES = (HERE / "compose.podman.yml", HERE / "compose.test.yml")
#: podman's settings for these tests (runtime, ulimits), via CONTAINERS_CONF.
CONTAINERS_CONF = HERE / "containers.conf"
#: Cached base image, each stack's secrets and certificates, kept logs (git-ignored var/).
CACHE_DIR = ROOT / "var" / "containers"
#: Container logs and health pump logs, kept after a run.
LOGS_DIR = CACHE_DIR / "logs"
#: podman-compose, installed next to this Python by the dev extra.
PODMAN_COMPOSE = str(Path(sys.executable).parent / "podman-compose")

#: The label podman-compose puts on every container, network and volume.
PROJECT_LABEL = "io.podman.compose.project"
#: The label naming a container's compose service.
SERVICE_LABEL = "com.docker.compose.service"
#: Prefix of every project name the tests make, so a stray one is recognisable.
PROJECT_PREFIX = "wizardtest"

#: Longest wait for one podman command, seconds (a build can take minutes).
COMMAND_TIMEOUT = 600.0
#: Longest wait for one HTTP request to the gateway, seconds.
HTTP_TIMEOUT = 10.0
#: Most times one request is sent again after a 429 from the gateway's
#: per-address limits (20 reads/s, 40 at once: ops/nginx/wizard-limits.conf).
RATE_LIMITED_RETRIES = 5
#: Longest Retry-After honoured, seconds (the gateway says 1).
MAX_RETRY_AFTER = 5.0


class EngineError(RuntimeError):
    """Raised when a podman or podman-compose command fails; the message
    carries its command line and output."""


class Podman:
    """The podman command line, always with this folder's containers.conf.

    Every call is a subprocess with a timeout; ``check`` raises EngineError
    on a non-zero exit.
    """

    def __init__(self, conf: Path = CONTAINERS_CONF) -> None:
        self.env = {**os.environ, "CONTAINERS_CONF": str(conf)}

    def run(
        self, *args: str, timeout: float = COMMAND_TIMEOUT, check: bool = True, **env: str
    ) -> subprocess.CompletedProcess:
        """Run ``podman *args`` (or podman-compose when args[0] is its path)."""
        argv = list(args) if args[0] == PODMAN_COMPOSE else ["podman", *args]
        result = subprocess.run(
            argv,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise EngineError(f"{' '.join(argv)} exited {result.returncode}:\n{result.stderr}")
        return result

    def json(self, *args: str) -> list | dict:
        """Run a podman command that prints JSON (``--format json``) and parse it."""
        return json.loads(self.run(*args).stdout or "[]")

    def exists(self, kind: str, name: str) -> bool:
        """True if the image/container/network/volume ``name`` exists (``kind exists``)."""
        return self.run(kind, "exists", name, check=False).returncode == 0

    def inspect(self, name: str) -> dict:
        """``podman inspect`` of one container, image, network or volume."""
        return self.json("inspect", name)[0]


@dataclass(frozen=True)
class Container:
    """One container of a stack, as ``podman ps`` lists it."""

    id: str
    name: str
    service: str
    state: str

    @property
    def hostname(self) -> str:
        """The container's hostname, which names the node (/whoami): its short id."""
        return self.id[:12]


def podman_tmpfs(entry: str, user: str) -> str:
    """A compose tmpfs entry (``/path:opt,opt``) as podman 4.3 takes it.

    podman 4.3 refuses the options ``uid=`` and ``gid=``; its own ``U`` gives
    the tmpfs to the container's user, the same owner when uid:gid is the
    service's ``user``, which is checked. Other entries are returned as they are.

    Raises:
        ValueError: uid:gid names someone else than ``user``.
    """
    path, _, options = entry.partition(":")
    kept, owner = [], {}
    for option in options.split(","):
        name, _, value = option.partition("=")
        if name in ("uid", "gid"):
            owner[name] = value
        else:
            kept.append(option)
    if not owner:
        return entry
    if f"{owner.get('uid')}:{owner.get('gid')}" != user:
        raise ValueError(f"tmpfs {entry!r} is owned by someone else than user {user!r}")
    return f"{path}:{','.join([*kept, 'U'])}"


def tmpfs_override(compose: dict) -> str:
    """An override file (YAML text) replacing, with ``!override``, the
    tmpfs list of every service of ``compose`` (the parsed compose file)
    that sets an owner, converted by podman_tmpfs; ``services: {}`` if none."""
    lines = []
    for name, service in compose["services"].items():
        entries = service.get("tmpfs", [])
        converted = [podman_tmpfs(entry, str(service.get("user", ""))) for entry in entries]
        if converted != entries:
            lines += [f"  {name}:", "    tmpfs: !override"]
            lines += [f"      - {json.dumps(entry)}" for entry in converted]
    header = "# Generated by tests/containers/engine.py (tmpfs_override) for podman 4.3.\n"
    return header + ("services:\n" + "\n".join(lines) + "\n" if lines else "services: {}\n")


@dataclass
class Stack:
    """docker-compose.yml (+ compose.podman.yml) up under a project of its own.

    ``profiles`` are compose profiles; ``services`` limits ``up`` to some
    services (empty: all of the profiles). The gateways are published on free
    loopback ports; the secrets (a random Valkey password, an empty tunnel
    token) and the certificates folder are the stack's own, under
    ``var/containers/<project>/``. Use as a context manager: leaving it runs
    ``down -v``, removes by id whatever still carries the project's label,
    stops the health pump and deletes that folder.
    """

    podman: Podman
    profiles: tuple[str, ...] = ()
    services: tuple[str, ...] = ()
    #: Extra environment for compose's ${...} substitutions.
    env: dict[str, str] = field(default_factory=dict)
    project: str = field(default_factory=lambda: PROJECT_PREFIX + secrets.token_hex(4))
    gateway_port: int = field(default_factory=free_port)
    public_port: int = field(default_factory=free_port)
    pump: subprocess.Popen | None = None

    # --- compose ----------------------------------------------------------

    @property
    def folder(self) -> Path:
        """This stack's own files: ``secrets/`` and ``certs/``."""
        return CACHE_DIR / self.project

    @property
    def certs(self) -> Path:
        """Mounted over ops/nginx/certs/ in the public gateway (compose.test.yml)."""
        return self.folder / "certs"

    @property
    def tmpfs_file(self) -> Path:
        """The generated override of the tmpfs entries (see tmpfs_override)."""
        return self.folder / "compose.tmpfs.yml"

    def prepare(self) -> None:
        """Write the stack's own files: the tmpfs override, and the secret
        files as ``make up`` does (mode 0640, of this user's group:
        WIZARD_SECRETS_GID, which compose adds to the containers that read them)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.tmpfs_file.write_text(tmpfs_override(yaml.safe_load(COMPOSE_FILE.read_text())))
        secrets_dir = self.folder / "secrets"
        secrets_dir.mkdir(parents=True, mode=0o700, exist_ok=True)
        self.certs.mkdir(exist_ok=True)
        contents = {
            "valkey-wizard-password": secrets.token_hex(32),
            "valkey-replication-password": secrets.token_hex(32),
            "valkey-sentinel-password": secrets.token_hex(32),
            "tunnel-token": "",
        }
        for name, content in contents.items():
            path = secrets_dir / name
            path.write_text(content + "\n")
            path.chmod(0o640)

    def substitutions(self) -> dict[str, str]:
        """The environment compose's ${...} read (compose.test.yml and the
        compose file's own WIZARD_SECRETS_GID)."""
        return {
            "WIZARD_TEST_GATEWAY_PORT": str(self.gateway_port),
            "WIZARD_TEST_PUBLIC_PORT": str(self.public_port),
            "WIZARD_TEST_SECRETS_DIR": str(self.folder / "secrets"),
            "WIZARD_TEST_CERTS_DIR": str(self.certs),
            "WIZARD_SECRETS_GID": str(os.getgid()),
            **self.env,
        }

    def compose(self, *args: str, timeout: float = COMMAND_TIMEOUT) -> subprocess.CompletedProcess:
        """Run ``podman-compose -p <project> -f docker-compose.yml -f <each
        override> [--profile p]... *args``."""
        profiles = [arg for name in self.profiles for arg in ("--profile", name)]
        paths = (COMPOSE_FILE, *OVERRIDE_FILES, self.tmpfs_file)
        files = [arg for path in paths for arg in ("-f", str(path))]
        argv = [PODMAN_COMPOSE, "-p", self.project, *files, *profiles, *args]
        return self.podman.run(*argv, timeout=timeout, **self.substitutions())

    def up(self) -> None:
        """Build the app image, ``up -d``, then start the health pump. (``make
        up`` runs ``up --build``; podman-compose would build the same image
        once per replica, so it is built once first.)"""
        self.prepare()
        self.compose("build", "app")
        self.compose("up", "-d", *self.services)
        self.start_pump()

    def start_pump(self) -> None:
        """Start the health pump for this project, once (stopped by PID in stop_pump)."""
        if self.pump is not None:
            return
        argv = [sys.executable, "-m", "tests.containers.pump", self.project]
        LOGS_DIR.mkdir(parents=True, exist_ok=True)
        with open(LOGS_DIR / f"{self.project}-pump.log", "ab") as log:
            self.pump = subprocess.Popen(
                argv, cwd=ROOT, env=self.podman.env, stdout=log, stderr=subprocess.STDOUT
            )

    def stop_pump(self) -> None:
        """Stop the health pump by PID: SIGTERM, then SIGKILL after 10 s."""
        if self.pump is None:
            return
        self.pump.terminate()
        try:
            self.pump.wait(timeout=10)
        except subprocess.TimeoutExpired:
            # It did not finish its current round in time: stop it now.
            self.pump.kill()
            self.pump.wait(timeout=10)
        self.pump = None

    def down(self) -> None:
        """``down -v --remove-orphans`` (stops with each service's grace period),
        then remove by id whatever the project still owns, then stop the pump."""
        try:
            self.compose("down", "-v", "--remove-orphans")
        finally:
            self.remove_leftovers()
            self.stop_pump()
            shutil.rmtree(self.folder, ignore_errors=True)

    def save_logs(self, folder: Path) -> None:
        """Write each container's output to ``folder/<container name>.log``
        (kept after the run, to read when a test failed)."""
        folder.mkdir(parents=True, exist_ok=True)
        for container in self.containers():
            logs = self.podman.run("logs", container.id, check=False)
            (folder / f"{container.name}.log").write_text(logs.stdout + logs.stderr)

    def remove_leftovers(self) -> None:
        """Remove by id every container, network and volume with this project's label."""
        leftovers = self.leftovers()
        for container in leftovers["containers"]:
            self.podman.run("rm", "--force", "--time", "0", container, check=False)
        for network in leftovers["networks"]:
            self.podman.run("network", "rm", "--force", network, check=False)
        for volume in leftovers["volumes"]:
            self.podman.run("volume", "rm", "--force", volume, check=False)

    def leftovers(self) -> dict[str, list[str]]:
        """Ids of this project's containers, networks and volumes still present."""
        label = f"label={PROJECT_LABEL}={self.project}"
        return {
            "containers": self._ids("ps", "--all", "--quiet", "--filter", label),
            "networks": self._ids("network", "ls", "--quiet", "--filter", label),
            "volumes": self._ids("volume", "ls", "--quiet", "--filter", label),
        }

    def _ids(self, *args: str) -> list[str]:
        return self.podman.run(*args).stdout.split()

    def __enter__(self) -> Stack:
        try:
            self.up()
        except BaseException:
            # A failed start still leaves containers and networks behind.
            self.down()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.down()

    # --- what runs ----------------------------------------------------------

    def containers(self, service: str | None = None) -> list[Container]:
        """This project's containers (running or not), optionally of one service,
        sorted by name (``<project>_<service>_<n>``)."""
        rows = self.podman.json(
            "ps", "--all", "--format", "json", "--filter", f"label={PROJECT_LABEL}={self.project}"
        )
        found = [
            Container(
                id=row["Id"],
                name=row["Names"][0],
                service=row["Labels"].get(SERVICE_LABEL, ""),
                state=row["State"],
            )
            for row in rows
        ]
        return sorted((c for c in found if service in (None, c.service)), key=lambda c: c.name)

    def health(self, container: Container) -> str:
        """The container's health: ``starting``, ``healthy``, ``unhealthy``,
        or ``""`` for a container without a healthcheck or not running."""
        state = self.podman.inspect(container.id)["State"]
        return (state.get("Health") or state.get("Healthcheck") or {}).get("Status", "")

    def healthy(self, expected: dict[str, int]) -> bool:
        """True once each service in ``expected`` has that many running,
        healthy containers (service name -> count)."""
        for service, count in expected.items():
            running = [c for c in self.containers(service) if c.state == "running"]
            if len(running) != count or any(self.health(c) != "healthy" for c in running):
                return False
        return True

    def network(self, name: str) -> str:
        """The podman name of the compose network ``name`` (``frontend``...)."""
        return f"{self.project}_{name}"

    # --- HTTP through the published gateway port --------------------------

    @property
    def url(self) -> str:
        """The dev gateway, published on the host's loopback only."""
        return f"http://127.0.0.1:{self.gateway_port}"

    def get(self, path: str, **kwargs) -> requests.Response:
        """GET ``path`` through the dev gateway (see :func:`polite`)."""
        return polite("GET", self.url + path, **kwargs)

    def post(self, path: str, **kwargs) -> requests.Response:
        """POST ``path`` through the dev gateway (see :func:`polite`)."""
        return polite("POST", self.url + path, **kwargs)


def polite(method: str, url: str, **kwargs) -> requests.Response:
    """One request, sent the way a good client does: a 429 from the gateway
    (every test polls from 127.0.0.1, one address to its limits) is waited
    out for its ``Retry-After`` seconds and sent again, at most
    RATE_LIMITED_RETRIES times; any other answer, or the last 429, is returned.
    Safe for a POST /task too: a 429 means nothing was done."""
    for _ in range(RATE_LIMITED_RETRIES):
        answer = requests.request(method, url, timeout=HTTP_TIMEOUT, **kwargs)
        if answer.status_code != 429:
            return answer
        time.sleep(min(float(answer.headers.get("Retry-After", "1")), MAX_RETRY_AFTER))
    return requests.request(method, url, timeout=HTTP_TIMEOUT, **kwargs)
