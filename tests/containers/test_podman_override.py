"""The tmpfs override the harness generates for podman 4.3: the compose
file's entries with podman's ``U`` (owner: the container's user) in place of
the ``uid=``/``gid=`` options podman refuses. Pure functions, no podman."""

from __future__ import annotations

import pytest
import yaml

from tests.containers.engine import COMPOSE_FILE, podman_tmpfs, tmpfs_override


def test_an_owned_tmpfs_is_given_to_the_containers_user_instead():
    entry = "/run/valkey:uid=999,gid=1000,mode=0700,size=1m"
    assert podman_tmpfs(entry, "999:1000") == "/run/valkey:mode=0700,size=1m,U"


def test_a_tmpfs_without_an_owner_is_kept_as_it_is():
    assert podman_tmpfs("/tmp:size=16m", "10001:10001") == "/tmp:size=16m"


def test_a_tmpfs_owned_by_someone_else_than_the_user_is_refused():
    with pytest.raises(ValueError, match="someone else"):
        podman_tmpfs("/var/run:uid=101,gid=101", "999:1000")


def test_the_override_replaces_only_owned_tmpfs_lists():
    compose = {
        "services": {
            "valkey": {"user": "999:1000", "tmpfs": ["/run/valkey:uid=999,gid=1000,size=1m"]},
            "app": {"tmpfs": ["/tmp:size=16m"]},
        }
    }
    text = tmpfs_override(compose)
    assert "!override" in text
    loader = type("Tags", (yaml.SafeLoader,), {})
    loader.add_constructor("!override", lambda load, node: load.construct_sequence(node))
    assert yaml.load(text, Loader=loader) == {
        "services": {"valkey": {"tmpfs": ["/run/valkey:size=1m,U"]}}
    }


def test_the_real_compose_file_converts():
    # Raises if an owned tmpfs names someone else than its service's user.
    assert tmpfs_override(yaml.safe_load(COMPOSE_FILE.read_text())).startswith("#")
