"""Fixtures of the integration files that share one ACL'd redis-server per module (the
redis role's users and rules): import ``server`` and ``clean`` into the module, and
every test there starts from an empty Redis. Not a conftest: an autouse flush must reach
only the modules that ask for it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devkit.acl_redis import AclRedis, acl_redis


@pytest.fixture(scope="module")
def server() -> Iterator[AclRedis]:
    with acl_redis() as running:
        yield running


@pytest.fixture(autouse=True)
def clean(server: AclRedis) -> None:
    server.client("admin").flushall()
