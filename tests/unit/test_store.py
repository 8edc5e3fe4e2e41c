"""store.connect picks a connection that treats "this server will not take
that write" as Valkey being away, whatever the URL's transport, with or
without sentinels (no server needed: clients connect lazily)."""

from __future__ import annotations

import pytest
import valkey

from wizard import store
from wizard.config import Settings


@pytest.mark.parametrize(
    ("url", "plain", "with_sentinels"),
    [
        ("valkey://h:6379/0", store.PrimaryConnection, store.SentinelPrimaryConnection),
        ("redis://h:6379/0", store.PrimaryConnection, store.SentinelPrimaryConnection),
        ("valkeys://h:6379/0", store.PrimarySSLConnection, store.SentinelPrimarySSLConnection),
        ("unix:///run/valkey.sock?db=0", store.PrimaryUnixConnection, None),
    ],
)
def test_the_connection_keeps_the_urls_transport_and_is_role_aware(url, plain, with_sentinels):
    pool = store.connect(Settings(valkey_url=url)).connection_pool
    assert pool.connection_class is plain
    assert issubclass(plain, store._RoleAware)
    if with_sentinels is not None:
        settings = Settings(valkey_url=url, valkey_sentinels=("s1:26379",))
        assert store.connect(settings).connection_pool.connection_class is with_sentinels


def test_with_sentinels_the_url_still_gives_the_database_and_password():
    settings = Settings(valkey_url="valkey://:secret@ignored:1/3", valkey_sentinels=("s1:26379",))
    kwargs = store.connect(settings).connection_pool.connection_kwargs
    assert (kwargs["db"], kwargs["password"]) == (3, "secret")


@pytest.mark.parametrize(
    ("error", "refused"),
    [
        (valkey.exceptions.ReadOnlyError("You can't write against a read only replica."), True),
        (valkey.ResponseError("NOREPLICAS Not enough good replicas to write."), True),
        (valkey.ResponseError("MASTERDOWN Link with MASTER is down"), True),
        (valkey.ResponseError("ERR Error running script: @user_script:5: -NOREPLICAS ..."), True),
        (valkey.ResponseError("WRONGTYPE Operation against a key holding the wrong kind"), False),
        (valkey.ResponseError("ERR unknown command 'READONLYX'"), False),
    ],
)
def test_only_role_refusals_count_as_the_primary_being_away(error, refused):
    assert store._refused_by_role(error) is refused
