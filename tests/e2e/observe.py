"""What the end-to-end tests wait on instead of sleeping, and the resets their fixtures
run: HAProxy's own view of its servers (the runtime API), the apps' answers and flag-cache
syncs (``/healthz``), Redis, and the deployed commits.

Every wait is bounded and says what it waited for (``tests.support.wait_until``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable

import redis
import requests

from cdpipe import socket_dir
from cdpipe_host.edge import USER_COOKIE, sign_user_id
from cdpipe_host.haproxy import HAProxyError, HAProxyRuntime, ServerState
from cdpipe_host.keys import CANARY_ALERT, CANARY_WEIGHT, FLAGS_PATTERN, servers_key
from cdpipe_host.proxy.desired import haproxy_weights
from cdpipe_host.values import DEFAULT_CANARY_WEIGHT
from tests.e2e.conftest import LocalEnv
from tests.support import wait_until

APP_ROLES = ("prod", "canary")


# -- the environment's report -----------------------------------------------------------
def status(env: LocalEnv) -> dict:  # type: ignore[type-arg]
    return json.loads(env.cdpipe("status", "--json").stdout)  # type: ignore[no-any-return]


def app_instances(env: LocalEnv, report: dict | None = None) -> dict[str, dict]:  # type: ignore[type-arg]
    """The inventory's app instances (prod and canary), by id (from ``report``, a status
    report, when one was just read)."""
    report = report or status(env)
    return {i["id"]: i for i in report["instances"] if i["role"] in APP_ROLES}


def versions(env: LocalEnv) -> dict[str, str]:
    return {i: inst["version"] for i, inst in app_instances(env).items() if inst["version"]}


# -- HAProxy --------------------------------------------------------------------------
def haproxy(env: LocalEnv) -> HAProxyRuntime:
    return HAProxyRuntime(str(socket_dir.default_for(env.home) / "proxy-1" / "haproxy.sock"))


def backend(env: LocalEnv) -> dict[str, ServerState] | None:
    """The app backend's servers as HAProxy has them now; None while it does not answer
    (a reload hands the socket over)."""
    try:
        return haproxy(env).servers()
    except HAProxyError:
        return None


def wait_backend(env: LocalEnv, check: Callable[[dict[str, ServerState]], bool], what: str,
                 timeout: float = 20.0) -> float:
    """Seconds until HAProxy's servers satisfy ``check``."""
    def holds() -> bool:
        servers = backend(env)
        return servers is not None and check(servers)
    return wait_until(holds, timeout, f"HAProxy: {what}")


def wait_held_out(env: LocalEnv, name: str, timeout: float = 20.0) -> float:
    """Until HAProxy sends no new request to ``name``: in maintenance, or gone."""
    return wait_backend(env, lambda s: name not in s or s[name].in_maintenance,
                        f"{name} out of rotation", timeout)


def wait_in_rotation(env: LocalEnv, name: str, timeout: float = 30.0) -> float:
    return wait_backend(env, lambda s: name in s and s[name].in_rotation,
                        f"{name} in rotation", timeout)


def expected_weights(r: redis.Redis, percent: int) -> dict[str, int]:
    """HAProxy weight of each registered app server for a canary share of ``percent``."""
    roles = {name: role for role in APP_ROLES for name in r.hkeys(servers_key(role))}
    prod_w, canary_w = haproxy_weights(percent, sum(v == "prod" for v in roles.values()),
                                       sum(v == "canary" for v in roles.values()))
    return {name: prod_w if role == "prod" else canary_w for name, role in roles.items()}


def wait_weights(env: LocalEnv, r: redis.Redis, percent: int, timeout: float = 20.0) -> float:
    """Until every registered server is in rotation with the weight of ``percent``."""
    want = expected_weights(r, percent)
    return wait_backend(
        env, lambda s: set(s) == set(want)
        and all(s[n].in_rotation and s[n].weight == w for n, w in want.items()),
        f"servers {sorted(want)} in rotation with weights {want} (canary {percent}%)",
        timeout)


# -- the apps -------------------------------------------------------------------------
def user_cookie(env: LocalEnv, user: str) -> dict[str, str]:
    """The cookies of a client known to the apps as ``user``: the user id cookie signed
    with the environment's secret, as the app sets it on a first visit."""
    secret = (env.home / "secrets" / "app_user_id_secret").read_text(encoding="utf-8").strip()
    return {USER_COOKIE: sign_user_id(secret, user)}


def answers(url: str, code: int, cookies: dict[str, str] | None = None) -> bool:
    try:
        return requests.get(url, cookies=cookies, timeout=2).status_code == code
    except requests.RequestException:
        return False


def wait_answers(urls: Iterable[str], path: str, code: int, timeout: float = 10.0,
                 user: str | None = None, env: LocalEnv | None = None) -> float:
    """Seconds until every URL answers ``code`` on ``path`` (as ``user`` of ``env``, if
    given: with that user's signed cookie)."""
    pending = set(urls)
    cookies = user_cookie(env, user) if user and env else None

    def done() -> bool:
        pending.difference_update({u for u in pending if answers(u + path, code, cookies)})
        return not pending
    who = f" for {user}" if user else ""
    return wait_until(done, timeout, lambda: f"{path} answering {code}{who} on every "
                      f"instance (still not: {sorted(pending)})")


def health(url: str) -> dict:  # type: ignore[type-arg]
    try:
        return requests.get(url + "/healthz", timeout=2).json()  # type: ignore[no-any-return]
    except (requests.RequestException, ValueError):
        return {}


def synced_since(url: str, since: float) -> bool:
    """The app's flag cache made a full sync with Redis after ``since`` (this machine's
    monotonic clock, which the app's shares; its age is rounded to 0.1 s)."""
    asked = time.monotonic()
    age = health(url).get("flags_synced_seconds_ago")
    if age is None:  # its cache starts at the first flag check, with a full sync
        answers(url + "/hiddenfeature", 200)
        return False
    return bool(asked - age - 0.05 > since)


def wait_synced(urls: Iterable[str], since: float, timeout: float = 15.0) -> float:
    """Until every app's flag cache has read all of Redis again after ``since``."""
    urls = list(urls)
    return wait_until(lambda: all(synced_since(u, since) for u in urls), timeout,
                      f"a full flag sync after the change on {urls}", interval=0.1)


# -- resets the fixtures run ----------------------------------------------------------
def ensure_redis_running(env: LocalEnv, url: str | None = None) -> redis.Redis:
    """A client of the environment's Redis, started again if it was stopped."""
    if "RUNNING" not in env.supervisorctl("redis-1", "status", "redis"):
        env.supervisorctl("redis-1", "start", "redis")
    r = redis.Redis.from_url(url, decode_responses=True) if url else env.redis()

    def pings() -> bool:
        try:
            return bool(r.ping())
        except redis.RedisError:
            return False
    wait_until(pings, 30, "Redis answering")
    return r


def reset_runtime(env: LocalEnv, report: dict | None = None) -> None:  # type: ignore[type-arg]
    """The runtime state `cdpipe up` leaves, whatever a test did, and seen to be in force:
    Redis running; no flag; no canary alert; the canary weight at its default; no app
    server registered but the inventory's. Waits until every app has re-read its flags
    (when any were removed) and HAProxy has exactly the inventory's servers in rotation
    with the default weights."""
    report = report or status(env)
    r = ensure_redis_running(env)
    apps = app_instances(env, report)
    flags = list(r.scan_iter(match=FLAGS_PATTERN, count=1000))
    since = time.monotonic()
    pipe = r.pipeline(transaction=True)
    if flags:
        pipe.delete(*flags)
    pipe.delete(CANARY_ALERT)
    pipe.set(CANARY_WEIGHT, str(DEFAULT_CANARY_WEIGHT))  # as `up` writes it
    for role in APP_ROLES:
        strays = [n for n in r.hkeys(servers_key(role)) if n not in apps]
        if strays:
            pipe.hdel(servers_key(role), *strays)
    pipe.execute()
    if flags:
        wait_synced([i["url"] for i in apps.values()], since)
    wait_weights(env, r, DEFAULT_CANARY_WEIGHT, timeout=60)  # a stray server drains first


def serve_commit(env: LocalEnv, commit: str, report: dict | None = None) -> None:  # type: ignore[type-arg]
    """Every app role on ``commit`` (deploying only the roles that are not)."""
    apps = app_instances(env, report)
    for role in APP_ROLES:
        if any(i["role"] == role and i["version"] != commit for i in apps.values()):
            env.cdpipe("deploy", "--ref", commit, "--target", role)
