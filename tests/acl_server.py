"""Fixtures of the integration files that share one ACL'd redis-server per module (the
redis role's users and rules): import ``server`` and ``clean`` into the module, and
every test there starts from an empty Redis. Not a conftest: an autouse flush must reach
only the modules that ask for it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cdpipe.model import Instance
from cdpipe.redis_users import password_name
from cdpipe.state import State, save
from devkit.acl_redis import AclRedis, acl_redis


@pytest.fixture(scope="module")
def server() -> Iterator[AclRedis]:
    with acl_redis() as running:
        yield running


@pytest.fixture(autouse=True)
def clean(server: AclRedis) -> None:
    server.client("admin").flushall()


def home_on(server: AclRedis, home: Path) -> None:
    """A CDPIPE_HOME whose environment is this Redis alone: every user's password in
    its secrets directory, a state with one redis instance on the server's port."""
    secrets_dir = home / "secrets"
    secrets_dir.mkdir(parents=True)
    for user, password in server.passwords.items():
        (secrets_dir / password_name(user)).write_text(password + "\n")
    save(home / "state.json", State(instances=[Instance(
        id="redis-1", role="redis", host="127.0.0.1", ports={"redis": server.port},
        provider="local")]))
