"""Process titles: make every process of a node easy to find in ``ps``.

A node's children are started by ``multiprocessing`` with ``spawn``, so
without help ``ps -ef`` shows each of them as ``python -B -c from
multiprocessing.spawn import spawn_main ...``. :func:`set_title` renames the
calling process in the two places Linux keeps a name:

- its command line (``/proc/<pid>/cmdline``, what ``ps -ef``, ``ps aux`` and
  ``top -c`` print): the bytes of the original ``argv`` are overwritten in
  place. Linux publishes where they are (``arg_start`` and ``arg_end``,
  fields 48-49 of ``/proc/self/stat``, proc(5)); Python keeps its own copy of
  ``sys.argv``, so nothing reads them again. The title is cut to the length
  of the original command line, which for a spawned child is ~150 bytes;
- its ``comm`` (``/proc/<pid>/comm``, what ``ps -e``, ``pgrep`` and ``top``
  print), set with ``prctl(PR_SET_NAME)``: at most 15 bytes, so it gets a
  short form.

This is what the ``setproctitle`` package does in C, reduced to Linux and
the standard library (``ctypes``). Elsewhere it does nothing::

    >>> name(node_id="node-1", role="worker w1")     # doctest: +SKIP
    $ ps -o pid,comm,args -p 41172
      PID COMMAND         COMMAND
    41172 w1 node-1       wizard node-1 worker w1
"""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path

#: prctl(2) option that sets the calling thread's name (``comm``).
PR_SET_NAME = 15

#: Longest ``comm``, bytes (TASK_COMM_LEN - 1).
COMM_MAX = 15

#: Index of ``arg_start`` in /proc/self/stat once the fields up to the
#: command name in parentheses are cut off (field 48 is index 45).
_ARG_START = 45


def name(*, node_id: str, role: str) -> None:
    """Give this process its title and short name as one of ``node_id``'s
    processes (:func:`title`, :func:`short_name`); a no-op off Linux."""
    set_title(title(node_id, role), short=short_name(node_id, role))


def title(node_id: str, role: str) -> str:
    """The title of one process of a node, e.g. ``wizard node-1 worker w1``
    for role ``worker w1``, ``wizard node-1 api``, ``wizard node-1 supervisor``."""
    return f"wizard {node_id} {role}"


def short_name(node_id: str, role: str) -> str:
    """The ``comm`` form of a title, at most 15 bytes: the role's last word
    first, so a long node id (a container's hostname) is what gets cut,
    e.g. ``w1 node-1``, ``api node-1``, ``scheduler node-``."""
    return f"{role.split()[-1]} {node_id}"[:COMM_MAX]


def set_title(text: str, *, short: str) -> bool:
    """Rename this process: ``text`` for its command line, ``short`` (cut
    to 15 bytes) for its ``comm``. Returns True if both were set; False on
    a system without ``/proc`` or ``prctl`` (nothing changes there)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_NAME, ctypes.c_char_p(short.encode()[:COMM_MAX]), 0, 0, 0)
        start, end = _argv_area()
    except (OSError, ValueError, IndexError):
        # No /proc, no libc symbol, or a stat line of another shape.
        return False
    size = end - start
    if size < 2:
        return False
    data = text.encode()[: size - 1]
    ctypes.memset(start, 0, size)
    ctypes.memmove(start, data, len(data))
    return True


def _argv_area() -> tuple[int, int]:
    """Addresses of the first byte of the original argv and one past its
    last (proc(5): ``arg_start``, ``arg_end``).

    Raises:
        OSError: /proc/self/stat cannot be read.
        ValueError, IndexError: the line has another shape.
    """
    line = Path("/proc/self/stat").read_text()
    fields = line.rsplit(")", 1)[1].split()
    return int(fields[_ARG_START]), int(fields[_ARG_START + 1])


def read_title(pid: int) -> str:
    """The command line of process ``pid`` as ``ps`` prints it (arguments
    joined by spaces, trailing NULs dropped); '' if it has exited.

    Raises nothing: a process that vanished has no title."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        # Exited meanwhile (or no /proc): no title to read.
        return ""
    return " ".join(part.decode(errors="replace") for part in raw.split(b"\0") if part)
