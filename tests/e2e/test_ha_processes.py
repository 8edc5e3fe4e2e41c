"""Under ``python -m wizard up --ha``, the banner and ``GET /cluster`` list
the same processes: every valkey-server (with its role at start) and every
sentinel, each by valkey-server's own PID; a part the launcher restarts is
announced with its new PID and recorded again."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import pytest
import requests

from tests.support import wait_for
from wizard import cluster as launcher
from wizard.cluster import LocalCluster, free_port


@pytest.mark.timeout(300)
def test_banner_and_cluster_list_every_valkey_server_and_sentinel(tmp_path, capsys):
    cluster = LocalCluster(gateway_port=free_port(), nodes=1, workers=1, var_dir=tmp_path, ha=True)
    try:
        cluster.start()
        processes = {
            p["name"]: p for p in requests.get(cluster.url + "/cluster").json()["processes"]
        }
        banner = launcher._banner(cluster, {}, [])
        primary = cluster.ha.primary()
        for part in cluster.ha.parts():
            pid = processes[part.name]["pid"]
            assert pid == part.server_pid
            assert Path(f"/proc/{pid}/comm").read_text().strip() == "valkey-server"
            role = "sentinel" if part in cluster.ha.sentinels else "valkey replica"
            role = "valkey primary" if part is primary else role
            assert processes[part.name]["role"] == role
            line = rf"^  {part.name} +\S*{re.escape(part.address)} +pid {pid}\b"
            assert re.search(line, banner, re.M), (part.name, banner)
        assert re.search(rf"^  {primary.name} .* \(primary at start\)$", banner, re.M)

        replica = next(s for s in cluster.ha.servers if s is not primary)
        sentinel = cluster.ha.sentinels[0]
        for part in (replica, sentinel):
            old = part.server_pid
            os.kill(old, signal.SIGKILL)
            wait_for(lambda part=part: part.process.poll() is not None, what=part.name)
            launcher._watch(cluster, launcher.Terminal())
            said = capsys.readouterr().out
            assert f"{part.name} killed by SIGKILL; restarting it" in said
            assert f"{part.name} restarted: pid {part.server_pid} (was {old})" in said
            assert part.server_pid != old
            recorded = {
                p["name"]: p for p in requests.get(cluster.url + "/cluster").json()["processes"]
            }
            assert recorded[part.name]["pid"] == part.server_pid
    finally:
        cluster.stop()
    assert cluster.pids() == []
