"""Fixtures of the contract tests: one node's API in-process on the real
Valkey of tests/conftest.py, with the real worker and scheduler steps that
move tasks through their states.
"""

from __future__ import annotations

import dataclasses

import pytest
import valkey

from tests.support import WsgiResponse, call
from wizard import queue, store
from wizard.api import Api, make_app
from wizard.cluster import free_port
from wizard.config import Settings
from wizard.scheduler import Scheduler
from wizard.worker import Worker

#: The admin token of the lab's node (WIZARD_ADMIN_TOKEN).
ADMIN_TOKEN = "contract-admin-token"

#: A worker id that never heartbeats: taking a task under it simulates a
#: worker that died right after its claim.
GHOST_WORKER = "ghost-node/w1"


@dataclasses.dataclass
class Lab:
    """One node (``node-1``) against the real Valkey: its WSGI app, the
    client the test uses to look inside, and real worker/scheduler steps.

    Settings: the test settings plus an admin token and ``max_attempts=1``,
    so one lost worker dead-letters a task.
    """

    settings: Settings
    client: valkey.Valkey
    app: Api
    #: What the last :meth:`call` sent: query, body and content type.
    last_request: dict = dataclasses.field(default_factory=dict)

    def call(self, method: str, path: str, *, app: Api | None = None, **options) -> WsgiResponse:
        """Call ``app`` (default: this node) in-process, as tests.support.call,
        remembering the request in ``last_request``."""
        self.last_request = {
            "query": {k: str(v) for k, v in (options.get("query") or {}).items()},
            "body": options.get("body", b""),
            "content_type": options.get("content_type", ""),
        }
        return call(app or self.app, method, path, **options)

    def admin(self) -> dict[str, str]:
        """The Authorization header of the admin routes."""
        return {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    def submit(self, a=1, b=2, operation: str = "add") -> str:
        """POST /task through the app; returns the new task id."""
        response = self.call("POST", "/task", query={"a": a, "b": b, "operation": operation})
        assert response.status == 202, response.body
        return response.json()["task_id"]

    def work(self, worker_id: str = "node-1/w1") -> str | None:
        """One real worker step (take, compute, record); its outcome."""
        worker = Worker(self.settings, worker_id)
        try:
            return worker.work_once()
        finally:
            worker.client.close()

    def beat(self, worker_id: str = "node-1/w1") -> None:
        """One real heartbeat of ``worker_id`` (heartbeat key + registry card)."""
        worker = Worker(self.settings, worker_id)
        try:
            worker.beat()
        finally:
            worker.client.close()

    def dead_letter(self) -> str:
        """A task whose only attempt was lost: submitted, taken by a worker
        that never heartbeats, then reaped by the real scheduler with
        ``max_attempts=1``. Returns its id, now in ``dead_letter_queue``."""
        task_id = queue.submit(self.client, "multiply", 6, 7, accepted_by="node-1")
        claim = queue.take(
            self.client,
            queue.Scripts(self.client),
            GHOST_WORKER,
            lease_ms=int(self.settings.lease_seconds * 1000),
            block_seconds=self.settings.block_seconds,
        )
        assert claim is not None and claim.task_id == task_id
        # The ghost never renews its lease: let it run out.
        self.client.hset(store.task_key(task_id), "lease_expires", 1)
        scheduler = Scheduler(self.settings)
        try:
            assert scheduler.reap() == (0, 1)
        finally:
            scheduler.client.close()
        return task_id

    def down(self) -> Api:
        """The same node, but pointed at a port where no Valkey listens, and
        with the rate limit on (its counters live in Valkey too)."""
        closed = dataclasses.replace(
            self.settings,
            valkey_url=f"valkey://127.0.0.1:{free_port()}/0",
            rate_limit=100,
            rate_burst=100,
        )
        return make_app(closed)

    def limited(self) -> Api:
        """The same node with a limit of one request per 1000 s, no burst:
        a second request is refused however slow the machine is."""
        return make_app(dataclasses.replace(self.settings, rate_limit=0.001, rate_burst=1))


@pytest.fixture
def lab(settings, client) -> Lab:
    """A node with an admin token and one attempt per task, on an empty Valkey."""
    node = dataclasses.replace(settings, admin_token=ADMIN_TOKEN, max_attempts=1)
    app = make_app(node)
    yield Lab(node, client, app)
    app.client.close()
