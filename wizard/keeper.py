"""Keeper: Valkey's guardian under ``python -m wizard up``, so the cluster
stops in order even when the launcher dies by SIGKILL.

The launcher stops its cluster in order: nginx, then the nodes (each worker
finishing its task and writing the result), then Valkey. A launcher killed
with ``kill -9`` runs no code at all: Linux sends every part the signal it
asked for with ``PR_SET_PDEATHSIG``, all at the same moment. If Valkey got
it too, the workers finishing a task would find it gone, their results
would be lost and the tasks run again after the next start. So the launcher
does not start Valkey itself but this small process, which starts it::

    launcher ─┬─ keeper ── valkey-server
              ├─ node-1 (supervisor) ── api, workers, scheduler
              ├─ node-2 ...
              └─ nginx

While the launcher lives, the keeper notes its other children (the nodes,
nginx) every KEEPER_POLL_SECONDS. On SIGTERM it looks at why:

- its parent is still the launcher: an ordered stop is under way, the nodes
  are already gone, so it stops Valkey (SIGTERM: flush the AOF) at once;
- its parent is gone (the launcher died): it waits until the parts it noted
  have exited, for at most ``--wait`` seconds (the workers' grace period plus
  the supervisor's margin), and only then stops Valkey.

If Valkey exits on its own, the keeper exits too, with valkey-server's exit
code, or 128 + N if a signal N killed it (the shell's convention: 137 for
SIGKILL), and the launcher, which reads it back with
:func:`describe_exit`, restarts it like any other part. Run as
``python -m wizard.keeper --launcher PID --wait SECONDS -- valkey-server ...``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time

from . import processes

#: How often the keeper notes the launcher's children and checks Valkey, seconds.
KEEPER_POLL_SECONDS = 0.2

#: Added to a signal's number for the keeper's exit code when that signal
#: killed valkey-server (the shell's convention: 128 + 9 = 137 for SIGKILL).
SIGNAL_EXIT_BASE = 128


def keeper_exit_code(returncode: int) -> int:
    """The keeper's exit code for valkey-server's ``returncode``
    (subprocess's: negative for a signal): 128 + N for signal N, else the
    code itself (at least 1: the keeper did not exit on request)."""
    if returncode < 0:
        return SIGNAL_EXIT_BASE - returncode
    return max(returncode, 1)


def describe_exit(returncode: int, *, keeper: bool) -> str:
    """What happened, in words, to a part that exited with ``returncode``
    (subprocess's); ``keeper``: the part is this keeper, so a code above
    128 means a signal killed valkey-server. E.g. ``killed by SIGKILL``."""
    signum = -returncode if returncode < 0 else 0
    if keeper and returncode > SIGNAL_EXIT_BASE:
        signum = returncode - SIGNAL_EXIT_BASE
    if signum:
        try:
            name = signal.Signals(signum).name
        except ValueError:
            # A real-time or unknown signal has no name: give its number.
            name = f"signal {signum}"
        return f"killed by {name}"
    return f"exited with code {returncode}"


class Keeper:
    """Valkey's parent: knows the launcher's PID, the other parts seen so far
    (pid -> start time) and whether it was asked to stop."""

    def __init__(self, launcher_pid: int, wait_seconds: float, argv: list[str]) -> None:
        self.launcher_pid = launcher_pid
        self.wait_seconds = wait_seconds
        self.argv = argv
        self.siblings: dict[int, str] = {}
        self.stop_signal: int | None = None

    def run(self) -> int:
        """Start Valkey, keep it until asked to stop, stop it in order.
        Returns the exit code (0, or :func:`keeper_exit_code` of Valkey's)."""
        processes.end_with_parent(self.launcher_pid)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._on_signal)
        # Valkey ends with the keeper, however the keeper ends (the keeper
        # has no threads, so preexec_fn is safe here).
        valkey = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, preexec_fn=processes.sigterm_when_parent_dies
        )
        while self.stop_signal is None and valkey.poll() is None:
            self._note_siblings()
            time.sleep(KEEPER_POLL_SECONDS)
        if valkey.poll() is not None:
            how = describe_exit(valkey.returncode, keeper=False)
            print(f"keeper: valkey-server (pid {valkey.pid}) {how}", flush=True)
            return keeper_exit_code(valkey.returncode)
        if not self._launcher_alive():
            self._wait_for_siblings()
        with contextlib.suppress(ProcessLookupError):
            # It exited by itself meanwhile: nothing to stop.
            valkey.send_signal(signal.SIGTERM)
        valkey.wait()
        return 0

    def _on_signal(self, signum, frame) -> None:
        self.stop_signal = signum

    def _launcher_alive(self) -> bool:
        return os.getppid() == self.launcher_pid

    def _note_siblings(self) -> None:
        """Note the launcher's children other than this keeper (while it lives)."""
        if not self._launcher_alive():
            return
        for pid in processes.children_of(self.launcher_pid):
            started = processes.process_start(pid)
            if pid != os.getpid() and started is not None:
                self.siblings.setdefault(pid, started)

    def _wait_for_siblings(self) -> None:
        """The launcher died: wait (at most ``wait_seconds``) for the parts it
        started to finish their own stop, so their last writes reach Valkey."""
        print(
            f"keeper: the launcher died; waiting up to {self.wait_seconds:g} s "
            f"for {len(self.siblings)} parts to stop before stopping Valkey",
            flush=True,
        )
        deadline = time.monotonic() + self.wait_seconds
        while time.monotonic() < deadline and self._running_siblings():
            time.sleep(KEEPER_POLL_SECONDS)
        left = self._running_siblings()
        if left:
            print(f"keeper: still running after the wait: {left}; stopping Valkey", flush=True)

    def _running_siblings(self) -> list[int]:
        return [pid for pid, at in self.siblings.items() if processes.process_start(pid) == at]


def main(argv: list[str] | None = None) -> int:
    """``python -m wizard.keeper --launcher PID --wait SECONDS -- COMMAND...``."""
    parser = argparse.ArgumentParser(
        prog="python -m wizard.keeper",
        description="Start Valkey; when the launcher dies, stop it only after the nodes.",
    )
    parser.add_argument("--launcher", type=int, required=True, help="the launcher's PID")
    parser.add_argument(
        "--wait", type=float, required=True, help="longest wait for the nodes, seconds"
    )
    parser.add_argument("command", nargs=argparse.REMAINDER, help="valkey-server and its args")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to keep after --")
    return Keeper(args.launcher, args.wait, command).run()


if __name__ == "__main__":
    sys.exit(main())
