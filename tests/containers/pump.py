"""The health pump: runs each container's healthcheck, as Docker would.

podman 4.3 schedules healthchecks with systemd timers; without systemd
(a container, a CI machine) they never run and every container stays
``starting``. This loop does the scheduling instead, for one compose
project: every container with a healthcheck is checked with ``podman
healthcheck run <id>`` once per its own ``interval`` (every second while it
is still ``starting``, so a test does not wait a whole interval for the
first result). The result is recorded by podman itself, exactly where
``podman inspect`` and compose read it.

    python -m tests.containers.pump <project> [lifetime seconds]

It stops on SIGTERM (the harness stops it by PID), when the process that
started it is gone (a test run killed with kill -9), and in any case after
``lifetime`` seconds (default 1800): no loop runs unbounded.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

#: How often the loop looks for due checks, seconds.
TICK = 1.0
#: Longest a pump runs, seconds, even if nobody stops it.
DEFAULT_LIFETIME = 1800.0
#: Longest one ``podman`` call may take, seconds.
CALL_TIMEOUT = 30.0
#: podman's unit for durations in ``inspect`` (nanoseconds).
NANOSECONDS = 1e9


def podman(*args: str) -> subprocess.CompletedProcess | None:
    """Run podman (CONTAINERS_CONF comes from this process's environment);
    None if it took longer than CALL_TIMEOUT."""
    try:
        return subprocess.run(
            ["podman", *args], capture_output=True, text=True, timeout=CALL_TIMEOUT
        )
    except subprocess.TimeoutExpired:
        # A container being stopped keeps its lock for its whole grace
        # period, and podman waits for it: skip this call, try next tick.
        return None


def checked_containers(project: str) -> dict[str, tuple[float, str]]:
    """Running containers of ``project`` that have a healthcheck:
    id -> (interval in seconds, current health status)."""
    listed = podman("ps", "--quiet", "--filter", f"label=io.podman.compose.project={project}")
    ids = listed.stdout.split() if listed else []
    if not ids:
        return {}
    inspected = podman("inspect", *ids)
    if inspected is None or inspected.returncode != 0:
        # A container went away between the two calls, or podman was busy:
        # try again next tick.
        return {}
    found = {}
    for container in json.loads(inspected.stdout):
        check = container["Config"].get("Healthcheck")
        if not check:
            continue
        state = container["State"]
        status = (state.get("Health") or state.get("Healthcheck") or {}).get("Status", "")
        found[container["Id"]] = (check.get("Interval", 0) / NANOSECONDS or TICK, status)
    return found


def pump(project: str, lifetime: float) -> None:
    """Run due healthchecks of ``project`` until SIGTERM or ``lifetime`` seconds."""
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    parent = os.getppid()
    ends = time.monotonic() + lifetime
    due: dict[str, float] = {}
    while not stop and os.getppid() == parent and time.monotonic() < ends:
        now = time.monotonic()
        for container, (interval, status) in checked_containers(project).items():
            if due.get(container, 0.0) > now:
                continue
            # The exit status says healthy or not; podman records it itself.
            podman("healthcheck", "run", container)
            due[container] = now + (TICK if status in ("", "starting") else interval)
        time.sleep(TICK)
    reason = "SIGTERM" if stop else f"its lifetime of {lifetime:g} s or its parent's end"
    print(f"health pump for {project} stopping after {reason}", file=sys.stderr)


def main(argv: list[str]) -> int:
    if not os.environ.get("CONTAINERS_CONF"):
        print("CONTAINERS_CONF is not set; start the pump from the harness", file=sys.stderr)
        return 2
    project = argv[0]
    lifetime = float(argv[1]) if len(argv) > 1 else DEFAULT_LIFETIME
    pump(project, lifetime)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
