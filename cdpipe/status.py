"""What ``cdpipe status`` reports: instances, versions, health, weights, flags, alerts,
and who holds the environment lock (``lock``: owner and seconds left, or None).

Secrets stay out of the report unless asked for: ``redis.url`` is the operator's URL
with the password replaced by REDACTED, or with ``show_secrets`` the working
``redis://operator:<password>@host:port/0``; ``redis.password_file`` says where the
password is."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import redis
import requests

from cdpipe.config import Settings
from cdpipe.controls import read_canary, read_flags, redis_password, redis_url
from cdpipe.env_lock import holder
from cdpipe.model import Instance
from cdpipe.redis_users import OPERATOR, password_name
from cdpipe.state import State
from cdpipe_host.names import DECODE_ERRORS
from cdpipe_host.values import DEFAULT_CANARY_WEIGHT


def _probe(instance: Instance, password: str | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"id": instance.id, "role": instance.role, "url": instance.url(),
                             "version": None, "healthy": False}
    try:
        if instance.role == "redis":
            client = redis.Redis(host=instance.host, port=instance.ports["redis"],
                                 username=OPERATOR, password=password, socket_timeout=1)
            entry["healthy"] = bool(client.ping())
        elif instance.role == "proxy":
            resp = requests.get(instance.url(), timeout=2)
            entry["healthy"] = resp.status_code == 200
        else:
            resp = requests.get(instance.url(), timeout=2)
            entry["healthy"] = resp.status_code == 200
            entry["version"] = resp.json().get("version")
    except (requests.RequestException, redis.RedisError, ValueError):
        entry["healthy"] = False
    return entry


def lock_report(client: redis.Redis) -> dict[str, Any] | None:
    """The environment lock's holder; None when it is free or (a Redis whose rules
    predate the lock: `cdpipe up` installs them) the operator may not read it."""
    try:
        held = holder(client)
    except redis.exceptions.NoPermissionError:
        return None
    if held is None:
        return None
    left = None if held.seconds_left is None else math.ceil(held.seconds_left)
    return {"owner": held.owner, "seconds_left": left}


def _runtime(url: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {"canary": {"weight": DEFAULT_CANARY_WEIGHT, "alert": False},
                           "flags": {}, "lock": None}
    if url is None:
        return out
    try:
        client = redis.Redis.from_url(url, socket_timeout=1, decode_responses=True,
                                      encoding_errors=DECODE_ERRORS)
        weight, alert = read_canary(client)
        out["canary"] = {"weight": weight, "alert": alert}
        out["flags"] = read_flags(client)
        out["lock"] = lock_report(client)
    except redis.RedisError as exc:
        out["redis_error"] = str(exc)
    return out


def collect(settings: Settings, state: State, show_secrets: bool = False) -> dict[str, Any]:
    password = redis_password(settings, OPERATOR)
    with ThreadPoolExecutor(max_workers=8) as pool:
        instances = list(pool.map(lambda i: _probe(i, password), state.instances))
    proxies = state.of_role("proxy")
    url = redis_url(settings, state)
    report: dict[str, Any] = {
        "provider": state.provider,
        "up": bool(state.instances),
        "proxy": {"url": proxies[0].url() if proxies else None,
                  "stats_url": proxies[0].url("stats") if proxies else None},
        "redis": {"url": url if show_secrets else redis_url(settings, state,
                                                            with_password=False),
                  "user": OPERATOR,
                  "password_file": str(settings.secrets_dir / password_name(OPERATOR))},
        "deployed": state.deployed,
        "options": state.options,
        "instances": instances,
        "mail": {"maildir": (f"{proxies[0].directory}/monitor/Maildir"
                             if proxies and proxies[0].directory else None)},
        "inventory": str(settings.inventory_file),
    }
    report |= _runtime(url)
    return report
