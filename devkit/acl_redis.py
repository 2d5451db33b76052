"""A throw-away redis-server configured by the redis role's own template, ACL users and
all (``roles/redis/templates/redis.conf.j2`` with the role's ``redis_acl_users``), on a
free loopback port, nothing written to disk; stopped on exit. What the ACL tests run
against: the rules the role installs, not a copy of them."""

from __future__ import annotations

import secrets
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import redis
from ansible.plugins.filter.core import FilterModule

from devkit import roles
from devkit.ports import free_port
from devkit.redis_server import wait_answering

ROLE = Path(__file__).resolve().parent.parent / "roles" / "redis"


def role_defaults() -> dict[str, Any]:
    return roles.role_defaults("redis")


def render_config(port: int, directory: str, passwords: dict[str, str]) -> str:
    """redis.conf as the role writes it (Jinja with Ansible's filters, as its template
    task renders it), for one loopback port and a scratch directory."""
    env = jinja2.Environment(trim_blocks=True, undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True)
    env.filters.update(FilterModule().filters())
    template = env.from_string((ROLE / "templates" / "redis.conf.j2").read_text("utf-8"))
    defaults = role_defaults()
    variables = {key: value for key, value in defaults.items()
                 if not (isinstance(value, str) and "{{" in value)}
    variables |= {"ansible_managed": "devkit.acl_redis", "redis_bind_addresses": ["127.0.0.1"],
                  "redis_port": port, "redis_dir": directory, "redis_passwords": passwords,
                  "redis_appendonly": False}
    return template.render(**variables)


@dataclass(frozen=True)
class AclRedis:
    port: int
    passwords: dict[str, str]

    def url(self, user: str) -> str:
        return f"redis://{user}:{self.passwords[user]}@127.0.0.1:{self.port}/0"

    def client(self, user: str) -> redis.Redis:
        return redis.Redis(port=self.port, username=user, password=self.passwords[user],
                           decode_responses=True, socket_timeout=5)


@contextmanager
def acl_redis(timeout: float = 5.0) -> Iterator[AclRedis]:
    """Yields the server once its admin answers PING; every user of the role gets a
    random password (URL-safe, so the URLs need no encoding)."""
    users = [user["name"] for user in role_defaults()["redis_acl_users"]]
    passwords = {user: secrets.token_urlsafe(18) for user in users}
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        conf = Path(tmp) / "redis.conf"
        conf.write_text(render_config(port, tmp, passwords), encoding="utf-8")
        conf.chmod(0o600)
        proc = subprocess.Popen(["redis-server", str(conf)], stdout=subprocess.DEVNULL)
        server = AclRedis(port, passwords)
        try:
            wait_answering(lambda: server.client("admin"), proc, timeout)
            yield server
        finally:
            proc.terminate()
            proc.wait(10)
