"""``python -m wizard inspect`` on a real Valkey: one read-only snapshot in
which each task is in exactly one place, the heartbeats with their time
left, and a task's hash; nothing is written."""

from __future__ import annotations

import time

from wizard import inspection, membership, queue
from wizard.__main__ import main


def test_the_report_shows_each_task_where_it_is_and_writes_nothing(client):
    scripts = queue.Scripts(client)
    held = queue.submit(client, "add", 1, 2, accepted_by="node-1")
    waiting = queue.submit(client, "add", 3, 4, accepted_by="node-1")
    # First in, first out: the first task submitted is the one taken.
    claim = queue.take(client, scripts, "node-1/w1", lease_ms=5000, block_seconds=0.1)
    assert claim.task_id == held
    now = time.time()
    card = membership.WorkerCard(
        "node-1/w1", node="node-1", pid=77, started=now, at=now, task_id=held
    )
    membership.beat(client, card, ttl_ms=5000)
    membership.record_process(client, "node-1/w1", pid=77, node="node-1", role="worker")
    before = {key: client.dump(key) for key in client.scan_iter()}

    lines = list(inspection.report(client, held))

    text = "\n".join(lines)
    assert f"task_queue (list; LPUSH in, taken from the right): 1 (oldest first): {waiting}" in text
    assert f"  task_queue:processing:node-1/w1: 1: {held}" in text
    assert "dead_letter_queue (list; newest first): 0" in text
    assert "worker:node-1/w1  expires in" in text and f"holding {held}" in text
    assert "  node-1/w1              pid 77" in text
    assert f"task:{held} (hash; no expiry while it is not finished):" in text
    assert any(line.split() == ["status", "running"] for line in lines)
    assert {key: client.dump(key) for key in client.scan_iter()} == before


def test_the_command_says_what_to_start_when_there_is_no_cluster(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("VALKEY_URL", raising=False)
    assert main(["inspect", "--var-dir", str(tmp_path)]) == 1
    assert "start the cluster first (make run, or make lab)" in capsys.readouterr().err
