"""The Redis users against a real redis-server that runs the redis role's own
configuration (its template and ACL rules, ``devkit.acl_redis``): each user can do what
its clients do and nothing more; the canary's (app) user cannot write the server lists
or flush; the operator drives flags and the kill switch with redis-cli as the README
shows it; ``cdpipe status`` keeps the password out unless asked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from app import create_app
from app.flags import EXTENSION
from cdpipe.redis_users import USERS
from cdpipe_host import discovery
from cdpipe_host.keys import (
    CANARY_ALERT,
    CANARY_WEIGHT,
    CONTROLLER_CHANNELS,
    DEPLOY_HISTORY,
    ENV_LOCK,
    FLAGS_CHANNEL,
    MONITOR_ALERT_HISTORY,
    MONITOR_ALERTS,
    MONITOR_CANARY_VERDICT,
    MONITOR_OUTBOX,
    MONITOR_SAMPLES,
    MONITOR_SCALE_EVENTS,
    MONITOR_SCALE_LAST,
    OPERATOR_CHANNELS,
    flag_key,
    servers_key,
)
from cdpipe_host.proxy.desired import read_desired
from devkit import cdpipe_env
from devkit.acl_redis import AclRedis
from tests.support import clean, home_on, server, wait_until  # noqa: F401 (fixtures)

CDPIPE = str(Path(sys.executable).parent / "cdpipe")
# Commands no user but admin may run, as redis-py sends them (none reaches the server's
# state: each is refused before it runs).
DANGEROUS = {
    "FLUSHALL": ("FLUSHALL",),
    "FLUSHDB": ("FLUSHDB",),
    "CONFIG": ("CONFIG", "SET", "requirepass", "x"),
    "DEBUG": ("DEBUG", "SLEEP", "0"),
    "SHUTDOWN": ("SHUTDOWN", "NOSAVE"),
    "MONITOR": ("MONITOR",),
    "KEYS": ("KEYS", "*"),
    "FUNCTION": ("FUNCTION", "FLUSH"),
}
# Who may write each kind of key (admin may write everything).
WRITERS = {
    servers_key("prod"): {"admin", "deployer"},
    flag_key("hiddenfeature"): {"admin", "operator"},
    CANARY_ALERT: {"admin", "operator", "monitor"},
    CANARY_WEIGHT: {"admin", "operator", "deployer"},
    MONITOR_OUTBOX: {"admin", "monitor"},
    MONITOR_SAMPLES: {"admin", "monitor"},
    MONITOR_ALERT_HISTORY: {"admin", "monitor"},
    ENV_LOCK: {"admin", "deployer"},
    DEPLOY_HISTORY: {"admin", "deployer"},
}


def refused(call: Callable[[], object]) -> bool:
    """True when Redis refused the call for lack of permission (NOPERM)."""
    try:
        call()
    except redis.exceptions.NoPermissionError:
        return True
    return False


def test_the_role_defines_exactly_the_users_cdpipe_connects_as(server: AclRedis) -> None:
    listed = server.client("admin").execute_command("ACL", "USERS")
    assert sorted(listed) == sorted([*USERS, "default"])


def test_nothing_answers_without_a_password(server: AclRedis) -> None:
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=server.port).get(flag_key("hiddenfeature"))
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=server.port, username="app", password="wrong").ping()
    with pytest.raises(redis.AuthenticationError):  # the old single-password form
        redis.Redis(port=server.port, password=server.passwords["admin"]).ping()


@pytest.mark.parametrize("user", [u for u in USERS if u != "admin"])
@pytest.mark.parametrize("command", sorted(DANGEROUS))
def test_dangerous_commands_are_for_admin_only(server: AclRedis, user: str,
                                               command: str) -> None:
    admin = server.client("admin")
    admin.set(flag_key("kept"), "on")
    # The ACL's own verdict (DEBUG is also off server-wide, which answers first) ...
    verdict = admin.execute_command("ACL", "DRYRUN", user, *DANGEROUS[command])
    assert verdict != "OK" and "no permissions" in verdict
    # ... and the command itself refused.
    with pytest.raises(redis.ResponseError):
        server.client(user).execute_command(*DANGEROUS[command])
    assert admin.get(flag_key("kept")) == "on"  # nothing was flushed


def test_admin_may_run_them(server: AclRedis) -> None:
    admin = server.client("admin")
    admin.set(flag_key("x"), "on")
    assert admin.keys("*") == [flag_key("x")]
    assert admin.config_get("notify-keyspace-events")
    admin.flushdb()
    assert admin.dbsize() == 0


@pytest.mark.parametrize("key", sorted(WRITERS))
@pytest.mark.parametrize("user", USERS)
def test_each_key_is_written_only_by_its_writers(server: AclRedis, user: str,
                                                 key: str) -> None:
    client = server.client(user)

    def write() -> object:
        if key.startswith("servers:"):
            return client.hset(key, "evil", "10.6.6.6:80")
        if key == MONITOR_SAMPLES:
            return client.hset(key, "prod-1", "{}")
        if key in (MONITOR_OUTBOX, MONITOR_ALERT_HISTORY, DEPLOY_HISTORY):
            return client.lpush(key, "{}")
        return client.set(key, "on")

    assert refused(write) == (user not in WRITERS[key]), (user, key)
    # Deleting is writing too.
    assert refused(lambda: client.delete(key)) == (user not in WRITERS[key]), (user, key)


def test_the_canary_cannot_touch_the_server_lists(server: AclRedis) -> None:
    """What the issue found: the canary's credential redirecting production traffic."""
    server.client("deployer").hset(servers_key("prod"), "prod-1", "127.0.0.1:8000")
    app = server.client("app")
    assert refused(lambda: app.hset(servers_key("prod"), "x", "10.6.6.6:80"))
    assert refused(lambda: app.hdel(servers_key("prod"), "prod-1"))
    assert refused(lambda: app.hgetall(servers_key("prod")))  # not even read
    assert refused(lambda: app.rename(servers_key("prod"), flag_key("x")))
    assert refused(lambda: app.publish("__keyspace@0__:servers:prod", "hset"))
    assert server.client("admin").hgetall(servers_key("prod")) == {"prod-1": "127.0.0.1:8000"}


def test_the_app_reads_flags_and_gets_their_notifications(server: AclRedis) -> None:
    """The app's real flag cache as the app user: a full sync, then a change by
    notification (the full resync is 30 s away)."""
    operator = server.client("operator")
    operator.set(flag_key("hiddenfeature"), "on")
    flask_app = create_app({"APP_REDIS_URL": server.url("app"), "TESTING": True,
                            "APP_FLAGS_RESYNC_SECONDS": 30})
    client = flask_app.test_client()
    assert client.get("/hiddenfeature").status_code == 200
    operator.set(flag_key("hiddenfeature"), "off")
    cache = flask_app.extensions[EXTENSION]
    wait_until(lambda: cache.snapshot().get(flag_key("hiddenfeature")) == "off", 5,
               "flag:hiddenfeature off in the app's cache, by notification")
    assert client.get("/hiddenfeature").status_code == 404
    cache.close()


def test_subscriptions_stay_within_each_users_channels(server: AclRedis) -> None:
    for user, pattern in (("app", CONTROLLER_CHANNELS[0]), ("app", "__keyspace@0__:*"),
                          ("controller", FLAGS_CHANNEL), ("operator", "__keyspace@0__:*"),
                          ("operator", "__keyevent@0__:*"), ("monitor", FLAGS_CHANNEL)):
        with pytest.raises(redis.exceptions.NoPermissionError):
            server.client(user).execute_command("PSUBSCRIBE", pattern)
    app = server.client("app").pubsub()
    app.psubscribe(FLAGS_CHANNEL)
    controller = server.client("controller").pubsub()
    controller.psubscribe(*CONTROLLER_CHANNELS)
    server.client("operator").set(CANARY_ALERT, "on")
    message = None
    for _ in range(50):
        message = controller.get_message(ignore_subscribe_messages=True, timeout=0.1)
        if message:
            break
    assert message and message["channel"] == f"__keyspace@0__:{CANARY_ALERT}"
    app.close()
    controller.close()


def test_the_controller_reads_its_desired_state_and_writes_nothing(server: AclRedis) -> None:
    server.client("deployer").hset(servers_key("prod"), "prod-1", "127.0.0.1:8000")
    server.client("operator").set(CANARY_WEIGHT, "10")
    controller = server.client("controller")
    desired = read_desired(controller)
    assert set(desired.servers) == {"prod-1"}
    assert refused(lambda: controller.set(CANARY_ALERT, "off"))
    assert refused(lambda: controller.get(flag_key("hiddenfeature")))


def test_the_deployer_registers_and_drains_with_the_guard(server: AclRedis) -> None:
    deployer = server.client("deployer")
    assert discovery.register(deployer, "prod", "prod-1", "127.0.0.1:8000")
    assert discovery.register(deployer, "canary", "canary-1", "127.0.0.1:8001")
    assert discovery.deregister(deployer, "canary", "canary-1")
    with pytest.raises(discovery.DrainRefused):
        discovery.deregister(deployer, "prod", "prod-1")
    assert deployer.set(CANARY_WEIGHT, "33", nx=True)
    assert refused(lambda: deployer.set(CANARY_ALERT, "off"))
    assert refused(lambda: deployer.get(flag_key("hiddenfeature")))


def test_the_monitor_keeps_its_state_and_raises_the_kill_switch(server: AclRedis) -> None:
    server.client("deployer").hset(servers_key("prod"), "prod-1", "127.0.0.1:8000")
    monitor = server.client("monitor")
    assert monitor.hgetall(servers_key("prod")) == {"prod-1": "127.0.0.1:8000"}
    pipe = monitor.pipeline(transaction=True)
    pipe.hset(MONITOR_ALERTS, "prod-cpu", "{}")
    pipe.rpush(MONITOR_OUTBOX, '{"subject": "x"}')
    pipe.set(CANARY_ALERT, "on")
    pipe.execute()
    raw = monitor.lrange(MONITOR_OUTBOX, 0, -1)
    assert monitor.lrem(MONITOR_OUTBOX, 1, str(raw[0])) == 1
    monitor.set(MONITOR_SCALE_LAST, "1")
    assert server.client("operator").get(CANARY_ALERT) == "on"
    assert refused(lambda: monitor.get(flag_key("hiddenfeature")))
    # Whether a deploy holds the environment lock (its polls then do not count for
    # scaling): read, never written.
    server.client("deployer").set(ENV_LOCK, "deploy", px=10_000)
    assert monitor.exists(ENV_LOCK) == 1
    assert refused(lambda: monitor.delete(ENV_LOCK))
    server.client("deployer").delete(ENV_LOCK)


def test_the_operator_reads_the_records_and_writes_none_of_them(server: AclRedis) -> None:
    """The dashboard's reads as the operator: the monitor's records, the server lists,
    the deploy history and the lock; it may write none of them."""
    admin = server.client("admin")
    admin.hset(MONITOR_SAMPLES, "prod-1", '{"role": "prod"}')
    admin.set(MONITOR_CANARY_VERDICT, '{"decided": false}')
    admin.lpush(MONITOR_SCALE_EVENTS, '{"direction": "out"}')
    admin.hset(servers_key("prod"), "prod-1", "127.0.0.1:8000")
    admin.lpush(DEPLOY_HISTORY, '{"result": "ok"}')
    admin.set(ENV_LOCK, "deploy on test")
    operator = server.client("operator")
    assert operator.hgetall(MONITOR_SAMPLES) == {"prod-1": '{"role": "prod"}'}
    assert operator.get(MONITOR_CANARY_VERDICT) == '{"decided": false}'
    assert operator.lrange(MONITOR_SCALE_EVENTS, 0, 19) == ['{"direction": "out"}']
    assert operator.hgetall(servers_key("prod")) == {"prod-1": "127.0.0.1:8000"}
    assert operator.lrange(DEPLOY_HISTORY, 0, 19) == ['{"result": "ok"}']
    for write in (lambda: operator.set("monitor:x", "1"),
                  lambda: operator.set("servers:x", "1"),
                  lambda: operator.set("deploy:x", "1"),
                  lambda: operator.hset(MONITOR_SAMPLES, "evil", "{}"),
                  lambda: operator.delete(MONITOR_SAMPLES),
                  lambda: operator.hset(servers_key("prod"), "evil", "10.6.6.6:80"),
                  lambda: operator.lpush(DEPLOY_HISTORY, "{}"),
                  lambda: operator.delete(DEPLOY_HISTORY),
                  lambda: operator.set(ENV_LOCK, "mine")):
        assert refused(write)
    assert admin.hgetall(servers_key("prod")) == {"prod-1": "127.0.0.1:8000"}
    assert admin.llen(DEPLOY_HISTORY) == 1


@pytest.mark.parametrize("pattern", OPERATOR_CHANNELS)
def test_the_operator_subscribes_to_the_notifications_of_what_it_reads(
        server: AclRedis, pattern: str) -> None:
    """Each of the operator's patterns, literally as the dashboard sends it, is allowed;
    a SET of flag:x reaches the flags' subscriber."""
    sub = server.client("operator").pubsub()
    sub.psubscribe(pattern)
    confirmed = sub.get_message(timeout=2)
    assert confirmed and confirmed["type"] == "psubscribe", confirmed
    server.client("operator").set(flag_key("x"), "on")
    message = None
    for _ in range(10):
        message = sub.get_message(ignore_subscribe_messages=True, timeout=0.1)
        if message:
            break
    if pattern == FLAGS_CHANNEL:
        assert message and message["channel"] == f"__keyspace@0__:{flag_key('x')}"
        assert message["data"] == "set"
    else:
        assert message is None
    sub.punsubscribe(pattern)
    sub.close()


def test_the_operator_receives_notifications_on_every_channel_at_once(
        server: AclRedis) -> None:
    """One connection subscribed to all the operator's patterns: a SET of a flag, a
    monitor record and a deploy entry each arrive."""
    sub = server.client("operator").pubsub()
    sub.psubscribe(*OPERATOR_CHANNELS)
    server.client("operator").set(flag_key("x"), "on")
    server.client("monitor").hset(MONITOR_SAMPLES, "prod-1", "{}")
    server.client("deployer").lpush(DEPLOY_HISTORY, "{}")
    seen: set[str] = set()
    for _ in range(50):
        message = sub.get_message(ignore_subscribe_messages=True, timeout=0.1)
        if message:
            seen.add(message["channel"])
        if len(seen) == 3:
            break
    assert seen == {f"__keyspace@0__:{k}"
                    for k in (flag_key("x"), MONITOR_SAMPLES, DEPLOY_HISTORY)}
    sub.close()


def test_the_deployer_records_deploys(server: AclRedis) -> None:
    deployer = server.client("deployer")
    pipe = deployer.pipeline(transaction=True)
    pipe.lpush(DEPLOY_HISTORY, '{"result": "ok"}')
    pipe.ltrim(DEPLOY_HISTORY, 0, 99)
    pipe.execute()
    assert deployer.lrange(DEPLOY_HISTORY, 0, -1) == ['{"result": "ok"}']
    assert refused(lambda: deployer.lpush(MONITOR_ALERT_HISTORY, "{}"))


def redis_cli(server: AclRedis, *args: str, auth: str | None = None
              ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "REDISCLI_AUTH"}
    if auth is not None:
        env["REDISCLI_AUTH"] = auth
    return subprocess.run(["redis-cli", "-p", str(server.port), *args], env=env,
                          capture_output=True, text=True, timeout=10, check=False)


def test_the_operator_drives_flags_and_the_kill_switch_with_redis_cli(
        server: AclRedis) -> None:
    """The README's commands: REDISCLI_AUTH plus --user, and the URL form."""
    password = server.passwords["operator"]
    out = redis_cli(server, "--user", "operator", "SET", flag_key("hiddenfeature"), "10%",
                    auth=password)
    assert out.stdout.strip() == "OK", out
    out = redis_cli(server, "--user", "operator", "SET", CANARY_ALERT, "on", auth=password)
    assert out.stdout.strip() == "OK", out
    out = redis_cli(server, "-u", server.url("operator"), "--no-auth-warning",
                    "SET", CANARY_WEIGHT, "10")
    assert out.stdout.strip() == "OK", out
    admin = server.client("admin")
    assert (admin.get(flag_key("hiddenfeature")), admin.get(CANARY_ALERT),
            admin.get(CANARY_WEIGHT)) == ("10%", "on", "10")
    out = redis_cli(server, "--user", "operator", "HSET", servers_key("prod"), "x", "y",
                    auth=password)
    assert "NOPERM" in out.stdout + out.stderr
    assert admin.exists(servers_key("prod")) == 0


def test_status_redacts_the_password_unless_asked(server: AclRedis, tmp_path: Path) -> None:
    """`cdpipe status` of an environment whose Redis is this server: the operator's URL
    with REDACTED for its password; --show-secrets prints the URL that works."""
    home = tmp_path / "home"
    env = cdpipe_env(home, 31500)
    home_on(server, home)
    server.client("operator").set(flag_key("hiddenfeature"), "on")

    def status(*args: str) -> subprocess.CompletedProcess[str]:
        out = subprocess.run([CDPIPE, "status", *args], env=env, capture_output=True,
                             text=True, timeout=60, check=False)
        assert out.returncode == 0, out.stderr
        return out

    for args in (("--json",), ()):
        printed = status(*args).stdout
        for password in server.passwords.values():
            assert password not in printed, args
    report = json.loads(status("--json").stdout)
    assert report["redis"]["url"] == f"redis://operator:REDACTED@127.0.0.1:{server.port}/0"
    assert report["redis"]["password_file"] == str(home / "secrets" / "redis_operator_password")
    assert report["flags"] == {"hiddenfeature": "on"}
    assert report["instances"][0]["healthy"] is True
    url = json.loads(status("--json", "--show-secrets").stdout)["redis"]["url"]
    assert url == server.url("operator")
    redis.Redis.from_url(url).set(flag_key("hiddenfeature"), "off")
    out = redis_cli(server, "-u", url, "--no-auth-warning", "GET", flag_key("hiddenfeature"))
    assert out.stdout.strip() == "off"
    assert "REDACTED" in status().stdout


def test_the_deployer_runs_the_locks_scripts_on_the_lock_key_only(server: AclRedis) -> None:
    """redis-py's Lock: SET NX PX, then EVALSHA (SCRIPT LOAD first when the server lacks
    the script). In Redis 7 a script's declared keys and the commands it runs are
    checked against the caller's rules: the deployer's scripts reach the lock key and
    its own keys, nothing else; EVAL, SCRIPT FLUSH and scripts are no one else's."""
    from redis.lock import Lock

    server.client("admin").script_flush()  # so the lock must load its scripts
    deployer = server.client("deployer")
    lock = Lock(deployer, ENV_LOCK, timeout=10)
    assert lock.acquire(blocking=False, token="deploy on test")
    lock.reacquire()
    lock.extend(5)
    assert server.client("operator").get(ENV_LOCK) == "deploy on test"
    lock.release()
    assert server.client("admin").exists(ENV_LOCK) == 0
    sha = deployer.script_load("return redis.call('get', KEYS[1])")
    assert refused(lambda: deployer.evalsha(sha, 1, flag_key("hiddenfeature")))
    writer = deployer.script_load("return redis.call('set', KEYS[1], 'x')")
    assert refused(lambda: deployer.evalsha(writer, 1, CANARY_ALERT))
    undeclared = deployer.script_load("return redis.call('set', 'flag:x', 'on')")
    with pytest.raises(redis.ResponseError):
        deployer.evalsha(undeclared, 1, ENV_LOCK)
    assert refused(lambda: deployer.eval("return 1", 0))
    assert refused(lambda: deployer.script_flush())
    for user in ("operator", "controller", "monitor", "app"):
        assert refused(lambda u=user: server.client(u).evalsha(sha, 1, ENV_LOCK)), user
        assert refused(lambda u=user: server.client(u).script_load("return 1")), user
    assert server.client("admin").exists(flag_key("x"), CANARY_ALERT) == 0
