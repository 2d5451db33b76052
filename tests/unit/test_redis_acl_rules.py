"""The redis role's ACL users (roles/redis/defaults/main.yml) against cdpipe's own
definitions: the users cdpipe connects as (cdpipe.redis_users) and the key and channel
patterns of the contract (cdpipe_host.keys), so a renamed key cannot leave a rule
behind. What the rules let each user do is tests/integration/test_redis_acl.py's."""

from __future__ import annotations

import pytest

from cdpipe.redis_users import USERS
from cdpipe_host.keys import (
    CANARY_ALERT,
    CANARY_PREFIX,
    CANARY_WEIGHT,
    CONTROLLER_CHANNELS,
    DEPLOY_HISTORY,
    DEPLOY_PREFIX,
    ENV_LOCK,
    FLAGS_CHANNEL,
    FLAGS_PATTERN,
    MONITOR_ALERT_HISTORY,
    MONITOR_ALERTS,
    MONITOR_CANARY_VERDICT,
    MONITOR_OUTBOX,
    MONITOR_OUTBOX_DEAD,
    MONITOR_PREFIX,
    MONITOR_SAMPLES,
    MONITOR_SCALE_EVENTS,
    MONITOR_SCALE_FAILING,
    MONITOR_SCALE_LAST,
    OPERATOR_CHANNELS,
    SERVERS_PREFIX,
)
from devkit.acl_redis import role_defaults

MONITOR_PATTERN = f"{MONITOR_PREFIX}*"
MONITOR_KEYS = (MONITOR_ALERTS, MONITOR_OUTBOX, MONITOR_OUTBOX_DEAD, MONITOR_SCALE_LAST,
                MONITOR_SCALE_FAILING, MONITOR_SAMPLES, MONITOR_CANARY_VERDICT,
                MONITOR_ALERT_HISTORY, MONITOR_SCALE_EVENTS)
SERVERS = f"{SERVERS_PREFIX}*"
CANARY = f"{CANARY_PREFIX}*"
DEPLOY = f"{DEPLOY_PREFIX}*"
# Per user: its key patterns (~ read-write, %R~ read-only) and its channels (&).
EXPECTED = {
    "operator": {f"~{FLAGS_PATTERN}", f"~{CANARY}", f"%R~{ENV_LOCK}", f"%R~{MONITOR_PATTERN}",
                 f"%R~{SERVERS}", f"%R~{DEPLOY}", *(f"&{c}" for c in OPERATOR_CHANNELS)},
    "deployer": {f"~{SERVERS}", f"~{CANARY_WEIGHT}", f"%R~{CANARY}", f"~{ENV_LOCK}",
                 f"~{DEPLOY}"},
    "controller": {f"%R~{SERVERS}", f"%R~{CANARY}", *(f"&{c}" for c in CONTROLLER_CHANNELS)},
    "monitor": {f"~{MONITOR_PATTERN}", f"~{CANARY_ALERT}", f"%R~{SERVERS}"},
    "app": {f"%R~{FLAGS_PATTERN}", f"&{FLAGS_CHANNEL}"},
}


def test_the_key_patterns_cover_the_keys_they_stand_for() -> None:
    assert all(k.startswith(MONITOR_PREFIX) for k in MONITOR_KEYS)
    assert DEPLOY_HISTORY.startswith(DEPLOY_PREFIX)


def rules() -> dict[str, list[str]]:
    return {u["name"]: u["rules"].split() for u in role_defaults()["redis_acl_users"]}


def test_the_role_has_one_entry_per_user_cdpipe_connects_as() -> None:
    names = [u["name"] for u in role_defaults()["redis_acl_users"]]
    assert sorted(names) == sorted(USERS) and len(names) == len(set(names))


@pytest.mark.parametrize("user", sorted(EXPECTED))
def test_each_users_keys_and_channels_are_the_contracts(user: str) -> None:
    patterns = {t for t in rules()[user] if t.startswith(("~", "%", "&"))}
    assert patterns == EXPECTED[user]


@pytest.mark.parametrize("user", sorted(EXPECTED))
def test_every_user_but_admin_starts_from_nothing_and_loses_the_dangerous(user: str) -> None:
    tokens = rules()[user]
    commands = [t for t in tokens if t[0] in "+-"]
    assert commands[0] == "-@all"
    assert "-@dangerous" in commands
    assert "+@all" not in tokens and "allkeys" not in tokens and "allcommands" not in tokens
    # Granted only before the dangerous ones are taken away again.
    assert commands.index("-@dangerous") > max(
        i for i, t in enumerate(commands) if t.startswith("+@"))


def test_admin_has_everything() -> None:
    assert rules()["admin"] == ["~*", "&*", "+@all"]


def test_only_the_deployer_runs_scripts_and_only_what_the_lock_needs() -> None:
    """redis-py's Lock extends and releases by EVALSHA and loads its scripts with
    SCRIPT LOAD; no other script command (EVAL, SCRIPT FLUSH) for anyone but admin."""
    for user, tokens in rules().items():
        single = {t for t in tokens if t[0] == "+" and not t.startswith("+@")}
        if user == "deployer":
            assert single == {"+evalsha", "+script|load"}
        elif user != "admin":
            assert not {"+eval", "+evalsha", "+script|load", "+@scripting"} & set(tokens)
