"""The redis role's ACL users (generated from cdpipe.redis_users.ACL into
roles/redis/defaults/main/model.yml): the shape every user's rules must keep. What the
rules let each user do is tests/integration/test_redis_acl.py's, against a real
redis-server configured by the role's template."""

from __future__ import annotations

import pytest

from cdpipe.redis_users import ADMIN, USERS
from cdpipe_host.keys import (
    DEPLOY_HISTORY,
    DEPLOY_PREFIX,
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
)
from devkit.acl_redis import role_defaults

MONITOR_KEYS = (MONITOR_ALERTS, MONITOR_OUTBOX, MONITOR_OUTBOX_DEAD, MONITOR_SCALE_LAST,
                MONITOR_SCALE_FAILING, MONITOR_SAMPLES, MONITOR_CANARY_VERDICT,
                MONITOR_ALERT_HISTORY, MONITOR_SCALE_EVENTS)
CLIENTS = sorted(user for user in USERS if user != ADMIN)


def test_the_key_patterns_cover_the_keys_they_stand_for() -> None:
    assert all(k.startswith(MONITOR_PREFIX) for k in MONITOR_KEYS)
    assert DEPLOY_HISTORY.startswith(DEPLOY_PREFIX)


def rules() -> dict[str, list[str]]:
    return {u["name"]: u["rules"].split() for u in role_defaults()["redis_acl_users"]}


def test_the_role_has_one_entry_per_user_cdpipe_connects_as() -> None:
    names = [u["name"] for u in role_defaults()["redis_acl_users"]]
    assert sorted(names) == sorted(USERS) and len(names) == len(set(names))


@pytest.mark.parametrize("user", CLIENTS)
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
