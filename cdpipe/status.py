"""What ``cdpipe status`` reports: instances, versions, health, weights, flags, alerts."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import redis
import requests

from cdpipe import secrets
from cdpipe.config import Settings
from cdpipe.contract import (
    CANARY_ALERT,
    CANARY_WEIGHT,
    DEFAULT_CANARY_WEIGHT,
    read_alert,
    read_weight,
    text,
)
from cdpipe.model import Instance
from cdpipe.state import State


def redis_url(settings: Settings, state: State, with_password: bool = True) -> str | None:
    servers = state.of_role("redis")
    if not servers:
        return None
    password = secrets.read(settings.secrets_dir, "redis_password") if with_password else None
    auth = f":{password}@" if password else ""
    return f"redis://{auth}{servers[0].host}:{servers[0].ports['redis']}/0"


def _probe(instance: Instance, redis_password: str | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"id": instance.id, "role": instance.role, "url": instance.url(),
                             "version": None, "healthy": False}
    try:
        if instance.role == "redis":
            client = redis.Redis(host=instance.host, port=instance.ports["redis"],
                                 password=redis_password, socket_timeout=1)
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


def _runtime(url: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {"canary": {"weight": DEFAULT_CANARY_WEIGHT, "alert": False},
                           "flags": {}}
    if url is None:
        return out
    try:
        client = redis.Redis.from_url(url, socket_timeout=1, decode_responses=True)
        weight, alert = client.mget([CANARY_WEIGHT, CANARY_ALERT])
        out["canary"] = {"weight": read_weight(text(weight)), "alert": read_alert(text(alert))}
        for key in sorted(client.scan_iter(match="flag:*", count=500)):
            out["flags"][key.split(":", 1)[1]] = client.get(key)
    except redis.RedisError as exc:
        out["redis_error"] = str(exc)
    return out


def collect(settings: Settings, state: State) -> dict[str, Any]:
    password = secrets.read(settings.secrets_dir, "redis_password")
    with ThreadPoolExecutor(max_workers=8) as pool:
        instances = list(pool.map(lambda i: _probe(i, password), state.instances))
    proxies = state.of_role("proxy")
    url = redis_url(settings, state)
    report: dict[str, Any] = {
        "provider": state.provider,
        "up": bool(state.instances),
        "proxy": {"url": proxies[0].url() if proxies else None,
                  "stats_url": proxies[0].url("stats") if proxies else None},
        "redis": {"url": url},
        "deployed": state.deployed,
        "instances": instances,
        "mail": {"maildir": (f"{proxies[0].directory}/monitor/Maildir"
                             if proxies and proxies[0].directory else None)},
        "inventory": str(settings.inventory_file),
    }
    report |= _runtime(url)
    return report
