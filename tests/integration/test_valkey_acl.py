"""Valkey locked down: the nodes' user (ops/valkey/wizard-user.acl) can do
everything a node does, and nothing that wipes, reconfigures or stops
Valkey; a client without a password gets nothing at all."""

from __future__ import annotations

import dataclasses
import fnmatch

import pytest
import valkey

from tests.support import call
from wizard import acl, store
from wizard.api import make_app
from wizard.scheduler import Scheduler
from wizard.worker import Worker


@pytest.fixture
def node_settings(settings, valkey_server):
    """Settings of a node logging in as `wizard`, password from a file."""
    return dataclasses.replace(
        settings,
        valkey_url=valkey_server.node_url,
        valkey_password_file=str(valkey_server.node_password_file),
        rate_limit=100.0,
        durable_ack=True,
        workers=1,
    )


@pytest.fixture
def node_client(node_settings):
    connection = store.connect(node_settings)
    yield connection
    connection.close()


def test_a_node_does_its_whole_job_as_the_wizard_user(node_settings, client):
    app = make_app(node_settings)
    consumer = Worker(node_settings, "node-1/w1")
    scheduler = Scheduler(node_settings)
    try:
        consumer.beat()
        headers = {"Idempotency-Key": "acl-check"}
        posted = call(app, "POST", "/task", query={"a": "1", "b": "2"}, headers=headers)
        assert posted.status == 202, posted.body
        again = call(app, "POST", "/task", query={"a": "1", "b": "2"}, headers=headers)
        assert again.json()["task_id"] == posted.json()["task_id"]
        failing = call(app, "POST", "/task", query={"a": "1", "b": "0", "operation": "divide"})
        assert failing.status == 202
        assert consumer.work_once() is not None
        assert consumer.work_once() is not None
        scheduler.tick()
        status = call(app, "GET", posted.json()["status_url"]).json()
        assert status["status"] == "complete" and status["result"] == 3
        for path in ("/readyz", "/valkey_test", "/tasks", "/cluster", "/metrics", "/dead_letters"):
            response = call(app, "GET", path)
            assert response.status == 200, (path, response.body)
        assert call(app, "GET", "/add", query={"a": "1", "b": "1"}).status == 200
    finally:
        consumer.client.close()
        app.client.close()


@pytest.mark.parametrize(
    "command",
    [
        ("FLUSHALL",),
        ("FLUSHDB",),
        ("CONFIG", "GET", "maxmemory-policy"),
        ("CONFIG", "SET", "appendonly", "no"),
        ("DEBUG", "SLEEP", "0"),
        ("KEYS", "*"),
        ("SHUTDOWN", "NOSAVE"),
        ("CLIENT", "KILL", "TYPE", "normal"),
        ("FUNCTION", "FLUSH"),
        ("ACL", "LIST"),
        ("SET", "not-ours", "1"),
        ("GET", "secrets:anything"),
    ],
)
def test_the_wizard_user_is_refused_what_no_node_needs(node_client, client, command):
    # The ACL itself refuses it (ACL DRYRUN asks it without running it;
    # DEBUG is also off server-wide, which would hide the ACL's answer)...
    verdict = client.execute_command("ACL", "DRYRUN", acl.NODE_USER, *command)
    assert verdict != "OK" and "no permissions" in verdict.lower(), verdict
    # ...and the real command, sent as a node, fails.
    with pytest.raises(valkey.exceptions.ResponseError):
        node_client.execute_command(*command)


def test_a_script_cannot_reach_outside_the_nodes_keys(node_client):
    sneaky = node_client.register_script("return redis.call('SET', KEYS[1], 'x')")
    with pytest.raises(valkey.exceptions.ResponseError, match="(?i)permission|no permissions"):
        sneaky(keys=["not-ours"])


def test_without_a_password_valkey_answers_nothing(valkey_server):
    anonymous = valkey.Valkey(host=valkey_server.host, port=valkey_server.port)
    with pytest.raises(valkey.exceptions.AuthenticationError):
        anonymous.set("task_queue", "x")
    anonymous.close()


def test_a_wrong_password_is_refused(valkey_server):
    url = f"valkey://{acl.NODE_USER}:guess@{valkey_server.host}:{valkey_server.port}/0"
    with pytest.raises(valkey.exceptions.AuthenticationError):
        valkey.Valkey.from_url(url).ping()


def test_every_key_of_the_store_is_allowed_to_the_nodes():
    rules = acl.node_rules().split()
    patterns = [rule[1:] for rule in rules if rule.startswith("~")]
    names = [
        value
        for name, value in vars(store).items()
        if name.isupper() and name.endswith(("_QUEUE", "_PREFIX", "_TASKS", "_REGISTRY", "_LOCK"))
    ]
    assert len(names) >= 10, names
    for name in names:
        sample = name + "x" if name.endswith(":") else name
        assert any(fnmatch.fnmatchcase(sample, p) for p in patterns), name


def test_the_password_files_are_private(valkey_server):
    assert valkey_server.node_password_file.stat().st_mode & 0o077 == 0
    assert valkey_server.acl_path.stat().st_mode & 0o077 == 0
