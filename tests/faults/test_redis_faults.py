"""Redis refusing writes (out of memory: ``maxmemory`` far below what it uses, policy
noeviction) and Redis paused (SIGSTOP) for longer than every client's timeout, under a
steady load through the proxy. Requests keep succeeding on the last known flags and
routing; an alert that breaches meanwhile is mailed once Redis takes writes again, once;
nobody crash-loops; everything resyncs."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.e2e.conftest import LocalEnv
from tests.e2e.load import failed
from tests.e2e.observe import app_instances, wait_answers, wait_synced, wait_weights
from tests.faults.conftest import (
    DEFAULT_WEIGHT,
    Outcome,
    admin_redis,
    alerts,
    in_rotation,
    mails_since_now,
    now,
    outcome,
    pid,
    report,
    requests_after,
    steady_load,
)
from tests.faults.test_process_kills import monitor_polls
from tests.support import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.faults]

# Longer than every client's timeout: the app's 0.5 s, the controller's 2 s, the
# monitor's 5 s (their Redis socket timeouts).
PAUSE_SECONDS = 8.0


def long_lived_pids(env: LocalEnv) -> dict[str, int]:
    return {f"{i}/{p}": pid(env, i, p) for i, p in (
        ("proxy-1", "monitor"), ("proxy-1", "proxy-controller"), ("proxy-1", "haproxy"),
        ("prod-1", "app"), ("canary-1", "app"))}


def test_redis_out_of_memory(healthy: LocalEnv, record: list[Outcome]) -> None:
    env = healthy
    r = admin_redis(env)
    apps = [i["url"] for i in app_instances(env, report(env)).values()]
    key = "instance-down/redis-1"
    fired = f"[cdpipe] FIRING {key}"
    new, pids = mails_since_now(env), long_lived_pids(env)
    r.set("flag:hiddenfeature", "on")
    wait_answers(apps, "/hiddenfeature", 200)
    original = str(r.config_get("maxmemory")["maxmemory"])
    with steady_load(env, "/hiddenfeature") as load:
        r.config_set("maxmemory", "1")  # every write is refused: OOM
        try:
            polls = monitor_polls(env)
            env.supervisorctl("redis-1", "stop", "agent")  # breaches while writes fail
            # The monitor keeps polling (its writes fail, each cycle logged, no crash).
            wait_until(lambda: monitor_polls(env) >= polls + 4, 20,
                       "4 polls of the monitor while Redis refuses writes")
            assert key not in alerts(env)  # it could not record the breach
            assert long_lived_pids(env) == pids
        finally:
            r.config_set("maxmemory", original)
        freed = now()
        wait_until(lambda: new()[fired] >= 1, 30,
                   "the alert mail once Redis takes writes again", interval=0.1)
        env.supervisorctl("redis-1", "start", "agent")
        wait_until(lambda: key not in alerts(env), 30, "the alert resolved")
        wait_synced(apps, freed)
        in_rotation(env)
        converged = now()
        requests_after(load, converged)
    record.append(outcome("Redis out of memory (writes refused)", load, freed, converged))
    assert load.failures() == [], failed(load)
    assert new()[fired] == 1
    assert long_lived_pids(env) == pids


def test_redis_paused_longer_than_every_timeout(healthy: LocalEnv,
                                                 record: list[Outcome]) -> None:
    env = healthy
    r = admin_redis(env)
    apps = [i["url"] for i in app_instances(env, report(env)).values()]
    pids = long_lived_pids(env)
    r.set("flag:hiddenfeature", "on")
    wait_answers(apps, "/hiddenfeature", 200)
    redis_pid = pid(env, "redis-1", "redis")
    with steady_load(env, "/hiddenfeature") as load:
        os.kill(redis_pid, signal.SIGSTOP)
        try:
            # Pacing of the fault itself, not a wait for a condition: Redis stays
            # stopped this long whatever the clients do.
            time.sleep(PAUSE_SECONDS)
        finally:
            os.kill(redis_pid, signal.SIGCONT)
        resumed = now()
        wait_synced(apps, resumed, timeout=30)
        r.set("canary:weight", "10")  # the controller reads Redis again
        wait_weights(env, r, 10, timeout=30)
        r.set("canary:weight", str(DEFAULT_WEIGHT))
        in_rotation(env)
        polls = monitor_polls(env)
        wait_until(lambda: monitor_polls(env) >= polls + 2, 20,
                   "two polls of the monitor after Redis resumed")
        converged = now()
        requests_after(load, converged)
    record.append(outcome(f"Redis paused {PAUSE_SECONDS:.0f} s (SIGSTOP)", load, resumed,
                          converged))
    assert load.failures() == [], failed(load)
    assert long_lived_pids(env) == pids  # no client gave up and crashed
