"""The running environment as the CLI reads and drives it: one Redis read layer (flags
in one SCAN + MGET, the canary's settings in one MGET), the operator's writes (flags,
the canary kill switch and weight) and HAProxy's per-server counters from its stats
page. The CLI and the dashboard call these same functions."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar
from urllib.parse import quote

import redis
import requests

from cdpipe import secret_files
from cdpipe.config import Settings
from cdpipe.errors import CdpipeError
from cdpipe.redis_users import OPERATOR, password_name
from cdpipe.state import State
from cdpipe_host.flagvalues import InvalidFlagValue, parse
from cdpipe_host.haproxy import APP_BACKEND, ServerStats, parse_stats_csv
from cdpipe_host.keys import CANARY_ALERT, CANARY_WEIGHT, FLAGS_PATTERN, flag_key, flag_name
from cdpipe_host.names import DECODE_ERRORS, flag_name_problem, shown
from cdpipe_host.values import read_alert, read_weight, text, valid_weight

REDACTED = "REDACTED"
T = TypeVar("T")


def format_redis_url(host: str, port: int, user: str, password: str | None) -> str:
    """The one form of the environment's Redis URLs: a named user (redis-cli 7 refuses
    an empty one) and the password percent-encoded."""
    auth = f"{user}:{quote(password, safe='')}@" if password else ""
    return f"redis://{auth}{host}:{port}/0"


def redis_password(settings: Settings, user: str) -> str | None:
    return secret_files.read(settings.secrets_dir, password_name(user))


def redis_url(settings: Settings, state: State, user: str = OPERATOR,
              with_password: bool = True) -> str | None:
    """The URL of ``user`` (the operator's by default); ``with_password=False`` gives it
    with the password replaced by REDACTED (what `status` prints)."""
    servers = state.of_role("redis")
    if not servers:
        return None
    password = redis_password(settings, user) if with_password else REDACTED
    return format_redis_url(servers[0].host, servers[0].ports["redis"], user, password)


def client(settings: Settings, state: State, timeout: float = 2,
           user: str = OPERATOR) -> redis.Redis:
    """A client as ``user``: the operator's for flags and the kill switch, the
    deployer's for the server lists."""
    url = redis_url(settings, state, user)
    if url is None:
        raise CdpipeError("no environment is up here; run `cdpipe up` first")
    return redis.Redis.from_url(url, decode_responses=True, socket_timeout=timeout,
                                socket_connect_timeout=timeout,
                                encoding_errors=DECODE_ERRORS)


def _call(action: str, fn: Callable[[], T]) -> T:
    try:
        return fn()
    except redis.AuthenticationError as exc:
        raise CdpipeError(f"cannot {action}: Redis refused the password ({exc}); run "
                          "`cdpipe up` to configure the passwords of the secrets "
                          "directory") from None
    except redis.exceptions.NoPermissionError as exc:
        raise CdpipeError(f"cannot {action}: Redis refused it ({exc})") from None
    except redis.RedisError as exc:
        raise CdpipeError(f"cannot {action}: Redis unreachable ({exc}); "
                          "check `cdpipe status`") from None


# -- reads ----------------------------------------------------------------------------
def shown_flag(name: str, raw: str) -> tuple[str, str]:
    """A flag as the CLI shows it, one line whatever was written into Redis: a valid
    value as it reads (lower case), anything else escaped, cut and marked as what it
    is (an invalid value reads as off; a key that is no flag name is read by no one)."""
    if flag_name_problem(name) is not None:
        return f"{shown(name)} (not a flag name, ignored)", shown(raw)
    try:
        parse(raw)
    except InvalidFlagValue:
        return name, f"invalid {shown(raw)} (reads as off)"
    return name, raw.strip().lower()


def read_flags(r: redis.Redis) -> dict[str, str]:
    """Every flag and its value as ``shown_flag`` shows it, by name (one SCAN, one
    MGET). RedisError goes up."""
    keys = sorted(str(k) for k in r.scan_iter(match=FLAGS_PATTERN, count=1000))
    values = r.mget(keys) if keys else []
    return dict(shown_flag(flag_name(k), str(text(v)))
                for k, v in zip(keys, values, strict=True) if v is not None)


def read_canary(r: redis.Redis) -> tuple[int, bool]:
    """(canary weight, canary alert) as the proxy reads them. RedisError goes up."""
    weight, alert = r.mget([CANARY_WEIGHT, CANARY_ALERT])
    return read_weight(text(weight)), read_alert(text(alert))


def list_flags(r: redis.Redis) -> dict[str, str]:
    return _call("list flags", lambda: read_flags(r))


def canary_settings(r: redis.Redis) -> tuple[int, bool]:
    return _call("read the canary settings", lambda: read_canary(r))


# -- writes ---------------------------------------------------------------------------
def check_flag_name(name: str) -> str:
    """``name`` when it is a flag name, else a one-line error naming what is wrong."""
    if (problem := flag_name_problem(name)) is not None:
        raise CdpipeError(f"invalid flag name {shown(name)}: {problem}")
    return name


def check_flag(name: str, value: str) -> str:
    """The value to store for flag ``name``, or a one-line error naming what is wrong."""
    check_flag_name(name)
    try:
        parse(value)
    except InvalidFlagValue:
        raise CdpipeError(
            f"invalid value {shown(value)} for flag {name}: use on, off or N% (0-100)") from None
    return value.strip().lower()


def set_flag(r: redis.Redis, name: str, value: str) -> str:
    stored = check_flag(name, value)
    _call("set the flag", lambda: r.set(flag_key(name), stored))
    return stored


def delete_flag(r: redis.Redis, name: str) -> bool:
    """Deletes flag ``name`` (it then reads as off); whether it was set."""
    check_flag_name(name)
    return bool(_call("delete the flag", lambda: r.delete(flag_key(name))))


def check_weight(value: str) -> int:
    """The canary weight ``value`` names (an integer 0-100), or a one-line error."""
    weight = valid_weight(value) if "%" not in value else None
    if weight is None:
        raise CdpipeError(f"invalid canary weight {shown(value)}: use an integer from 0 "
                          "to 100")
    return weight


def set_weight(r: redis.Redis, value: str) -> int:
    """Writes ``canary:weight``; the weight stored."""
    weight = check_weight(value)
    _call("set the canary weight", lambda: r.set(CANARY_WEIGHT, str(weight)))
    return weight


def set_alert(r: redis.Redis, on: bool) -> None:
    _call("set the canary alert", lambda: r.set(CANARY_ALERT, "on" if on else "off"))


# -- HAProxy --------------------------------------------------------------------------
def backend_stats(settings: Settings, state: State) -> dict[str, ServerStats]:
    """Requests, 5xx responses and status of each app server, from HAProxy's stats page
    (counted since HAProxy last reloaded)."""
    proxies = state.of_role("proxy")
    if not proxies:
        return {}
    password = secret_files.read(settings.secrets_dir, "stats_password") or ""
    try:
        resp = requests.get(proxies[0].url("stats") + "/;csv", auth=("admin", password),
                            timeout=3)
        resp.raise_for_status()
    except requests.RequestException as exc:
        raise CdpipeError(f"cannot read HAProxy stats: {exc}") from None
    return parse_stats_csv(resp.text, APP_BACKEND)
