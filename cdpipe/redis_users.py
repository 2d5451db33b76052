"""The environment's Redis users (ACL): the name each client connects as, where its
password lives, and what it may do (``ACL``: one entry per user, its purpose, its key
and channel patterns from ``cdpipe_host.keys`` and its commands). The redis role's
``redis_acl_users`` is generated from ``ACL`` (``cdpipe.ansible_values``); what the
rules let each user do is tests/integration/test_redis_acl.py's.
"""

from __future__ import annotations

from typing import NamedTuple

from cdpipe_host.keys import (
    CANARY_ALERT,
    CANARY_PREFIX,
    CANARY_WEIGHT,
    CONTROLLER_CHANNELS,
    DEPLOY_PREFIX,
    ENV_LOCK,
    FLAGS_CHANNEL,
    FLAGS_PATTERN,
    MONITOR_PREFIX,
    OPERATOR_CHANNELS,
    SERVERS_PREFIX,
)

ADMIN = "admin"
OPERATOR = "operator"
DEPLOYER = "deployer"
CONTROLLER = "controller"
MONITOR = "monitor"
APP = "app"
USERS = (ADMIN, OPERATOR, DEPLOYER, CONTROLLER, MONITOR, APP)


def password_name(user: str) -> str:
    """The secret's name (its file in the secrets directory): ``redis_<user>_password``."""
    if user not in USERS:
        raise ValueError(f"unknown Redis user {user!r}")
    return f"redis_{user}_password"


class Acl(NamedTuple):
    what: str  # who connects as the user, and for what
    keys: tuple[str, ...]  # ~pattern: read and write; %R~pattern: read only
    channels: tuple[str, ...]  # Pub/Sub channel patterns it may subscribe to
    commands: str  # Redis 7 ACL command rules, applied in order


_SERVERS, _CANARY = f"{SERVERS_PREFIX}*", f"{CANARY_PREFIX}*"
_MONITOR, _DEPLOY = f"{MONITOR_PREFIX}*", f"{DEPLOY_PREFIX}*"
# Every user but admin starts from nothing (-@all) and loses the dangerous commands
# (FLUSHALL, CONFIG, DEBUG, SHUTDOWN, MONITOR, KEYS...) after its grants, and the
# server-wide FUNCTION LOAD/DELETE/FLUSH that @write holds.
_CLIENT = "-@all +@connection"
ACL: dict[str, Acl] = {
    ADMIN: Acl("maintenance by hand and the redis role's own health check: everything",
               ("*",), ("*",), "+@all"),
    OPERATOR: Acl(
        "redis-cli, the CLI and the dashboard: feature flags and the canary's switch and "
        "weight; reads the environment lock, the monitor's records, the server lists and "
        "the deploy history, and the notifications of every key it reads",
        (FLAGS_PATTERN, _CANARY, f"%R~{ENV_LOCK}", f"%R~{_MONITOR}", f"%R~{_SERVERS}",
         f"%R~{_DEPLOY}"), OPERATOR_CHANNELS,
        f"{_CLIENT} +@read +@write +@transaction +psubscribe +punsubscribe -@dangerous "
        "-function"),
    DEPLOYER: Acl(
        "registration and drain on the proxy host and the control machine's scale path "
        "(never an app machine): the server lists, the canary's initial weight, the "
        "deploy history and the environment lock (redis-py's Lock: SET NX PX, then Lua "
        "scripts by EVALSHA, loaded with SCRIPT LOAD)",
        (_SERVERS, CANARY_WEIGHT, f"%R~{_CANARY}", ENV_LOCK, _DEPLOY), (),
        f"{_CLIENT} +@read +@write +@transaction +evalsha +script|load -@dangerous -function"),
    CONTROLLER: Acl(
        "the proxy controller: reads the server lists and canary:*, and their "
        "notifications", (f"%R~{_SERVERS}", f"%R~{_CANARY}"), CONTROLLER_CHANNELS,
        f"{_CLIENT} +@read +@transaction +psubscribe +punsubscribe -@dangerous"),
    MONITOR: Acl(
        "the monitor: its own keys, the kill switch it raises, the server lists it polls, "
        "and whether the environment lock is held (no scale decision counts those polls)",
        (_MONITOR, CANARY_ALERT, f"%R~{_SERVERS}", f"%R~{ENV_LOCK}"), (),
        f"{_CLIENT} +@read +@write +@transaction -@dangerous -function"),
    APP: Acl(
        "the apps (the canary runs untested code): read flags, and their notifications",
        (f"%R~{FLAGS_PATTERN}",), (FLAGS_CHANNEL,),
        f"{_CLIENT} +@read +psubscribe +punsubscribe -@dangerous"),
}


def acl_rules(user: str) -> str:
    """The user's rules as redis.conf's ``user`` line takes them."""
    acl = ACL[user]
    keys = [key if key.startswith("%") else f"~{key}" for key in acl.keys]
    return " ".join([*keys, *(f"&{channel}" for channel in acl.channels), acl.commands])
