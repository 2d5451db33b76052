"""Operator actions on the running system through Redis (the contract's keys) and
HAProxy's stats: feature flags, the canary kill switch and the canary's numbers."""

from __future__ import annotations

import csv
import io
import re
from typing import Any

import redis
import requests

from cdpipe import secrets
from cdpipe.config import Settings
from cdpipe.contract import (
    CANARY_ALERT,
    CANARY_WEIGHT,
    FLAG_PREFIX,
    read_alert,
    read_weight,
    text,
)
from cdpipe.errors import CdpipeError
from cdpipe.flagvalues import InvalidFlagValue, parse
from cdpipe.state import State
from cdpipe.status import redis_url

FLAG_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def client(settings: Settings, state: State) -> redis.Redis:
    url = redis_url(settings, state)
    if url is None:
        raise CdpipeError("no environment is up here; run `cdpipe up` first")
    return redis.Redis.from_url(url, decode_responses=True, socket_timeout=2,
                                socket_connect_timeout=2)


def _call(action: str, fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except redis.RedisError as exc:
        raise CdpipeError(f"cannot {action}: Redis unreachable ({exc}); "
                          "check `cdpipe status`") from None


def set_flag(r: redis.Redis, name: str, value: str) -> str:
    if not FLAG_NAME.match(name):
        raise CdpipeError(f"invalid flag name {name!r}: use letters, digits, '-', '_' or '.'")
    try:
        parse(value)
    except InvalidFlagValue:
        raise CdpipeError(
            f"invalid value {value!r} for flag {name}: use on, off or N% (0-100)") from None
    stored = value.strip().lower()
    _call("set the flag", r.set, f"{FLAG_PREFIX}{name}", stored)
    return stored


def list_flags(r: redis.Redis) -> dict[str, str]:
    def read() -> dict[str, str]:
        keys = sorted(r.scan_iter(match=f"{FLAG_PREFIX}*", count=1000))
        values = r.mget(keys) if keys else []
        return {k[len(FLAG_PREFIX):]: str(text(v)) for k, v in zip(keys, values, strict=True)
                if v is not None}
    return dict(_call("list flags", read))


def set_alert(r: redis.Redis, on: bool) -> None:
    _call("set the canary alert", r.set, CANARY_ALERT, "on" if on else "off")


def canary_settings(r: redis.Redis) -> tuple[int, bool]:
    weight, alert = _call("read the canary settings", r.mget, [CANARY_WEIGHT, CANARY_ALERT])
    return read_weight(weight), read_alert(alert)


def backend_stats(settings: Settings, state: State) -> dict[str, dict[str, int | str]]:
    """Requests, 5xx responses and status of each app server, from HAProxy's stats page
    (counted since HAProxy last reloaded)."""
    proxies = state.of_role("proxy")
    if not proxies:
        return {}
    password = secrets.read(settings.secrets_dir, "stats_password") or ""
    try:
        resp = requests.get(proxies[0].url("stats") + "/;csv", auth=("admin", password),
                            timeout=3)
        resp.raise_for_status()
    except requests.RequestException as exc:
        raise CdpipeError(f"cannot read HAProxy stats: {exc}") from None
    rows = csv.DictReader(io.StringIO(resp.text.lstrip("# ")))
    out: dict[str, dict[str, int | str]] = {}
    for row in rows:
        if row.get("pxname") == "app" and row.get("svname") not in ("FRONTEND", "BACKEND"):
            responses = sum(int(row.get(f"hrsp_{c}") or 0)
                            for c in ("1xx", "2xx", "3xx", "4xx", "5xx", "other"))
            out[row["svname"]] = {
                "requests": responses,
                "5xx": int(row.get("hrsp_5xx") or 0),
                "status": row.get("status", "?"),
                "weight": int(row.get("weight") or 0),
            }
    return out
