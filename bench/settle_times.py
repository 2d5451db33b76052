"""How long a change takes to be in force: the times the tests wait for (boundedly) and no
longer assert. A flag change reaching the app's cache and every instance, the canary
alert and server membership reaching HAProxy (its runtime API, what the end-to-end tests
watch), a poll cycle with a slow and a dead endpoint against the monitor's timeout, an
instance going down to its alert mail, and a failing canary to its alert, in polls.

Figures, each with a baseline of the same run where one exists; no verdicts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import mailbox
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import redis
import requests

from app.flags import FlagCache
from bench.monitoring_bench import serve_endpoints
from bench.runtime_control import _percentile, _redis
from bench.scratch_env import CDPIPE, BenchEnv
from cdpipe import socket_dir
from cdpipe.redis_users import ADMIN, APP, DEPLOYER, MONITOR
from cdpipe_host.haproxy import HAProxyError, HAProxyRuntime, ServerState
from cdpipe_host.keys import CANARY_ALERT, MONITOR_ALERTS, flag_key, servers_key
from devkit import free_port
from devkit.redis_server import scratch_redis
from devkit.scratch import commit_flaky_release
from monitoring.config import MonitorConfig
from monitoring.monitor import Monitor


def until(check: Callable[[], bool], t0: float, what: str, limit: float = 30.0,
          interval: float = 0.0001) -> float:
    """Seconds from ``t0`` (perf_counter) until check() held, polled every ``interval``
    (a sleep, so that the threads being measured get the GIL); SystemExit after
    ``limit`` seconds."""
    while not check():
        if time.perf_counter() - t0 > limit:
            raise SystemExit(f"bench: {what}: not within {limit} s")
        time.sleep(interval)
    return time.perf_counter() - t0


def _status(env: BenchEnv) -> dict:  # type: ignore[type-arg]
    out = subprocess.run([CDPIPE, "status", "--json"], env=env.env, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


# -- flags ----------------------------------------------------------------------------
def cache_notification(rounds: int = 200, warm_up: int = 5) -> tuple[list[float], list[float]]:
    """Milliseconds from `SET flag:latency` to the app's flag cache (FlagCache, in this
    process) serving the new value: the keyspace notification's path (the full resync
    is 30 s away). Baseline, the same rounds: `SET` then `GET` of a value by a second
    client (one Redis round trip more than the SET)."""
    with scratch_redis() as url:
        writer = redis.Redis.from_url(url, decode_responses=True)
        reader = redis.Redis.from_url(url, decode_responses=True)
        logging.getLogger("app.flags").setLevel(logging.ERROR)  # not its shutdown
        cache = FlagCache(url, resync_seconds=30)
        cache.enabled("latency")  # starts its listener
        cached, baseline = [], []
        for n in range(warm_up + rounds):
            value, want = ("on", True) if n % 2 == 0 else ("off", False)
            t0 = time.perf_counter()
            writer.set(flag_key("latency"), value)
            took = until(lambda: cache.enabled("latency") == want,  # noqa: B023
                         t0, "the flag cache seeing the change", 5)
            t0 = time.perf_counter()
            writer.set(flag_key("baseline"), value)
            reader.get(flag_key("baseline"))
            base = time.perf_counter() - t0
            if n >= warm_up:
                cached.append(took * 1000)
                baseline.append(base * 1000)
        cache.close()
    return cached, baseline


def flag_everywhere(env: BenchEnv, rounds: int = 40) -> list[float]:
    """Milliseconds from SET flag:hiddenfeature to every app instance (each asked
    directly, not through the proxy) answering by the new value."""
    urls = [i["url"] + "/hiddenfeature" for i in _status(env)["instances"]
            if i["role"] in ("prod", "canary")]
    r = _redis(env)
    latencies = []
    with requests.Session() as session:
        for n in range(rounds):
            value, want = ("on", 200) if n % 2 == 0 else ("off", 404)
            pending = list(urls)

            def served() -> bool:
                pending[:] = [u for u in pending  # noqa: B023
                              if session.get(u, timeout=5).status_code != want]  # noqa: B023
                return not pending  # noqa: B023
            t0 = time.perf_counter()
            r.set(flag_key("hiddenfeature"), value)
            latencies.append(1000 * until(served, t0, "the flag on every instance", 5))
            time.sleep(0.05)  # pacing between rounds
    r.delete(flag_key("hiddenfeature"))
    return latencies


# -- HAProxy --------------------------------------------------------------------------
def _backend(env: BenchEnv) -> Callable[[], dict[str, ServerState]]:
    """HAProxy's app servers from its runtime API; {} while it does not answer."""
    runtime = HAProxyRuntime(str(socket_dir.default_for(env.home) / "proxy-1" /
                                 "haproxy.sock"))

    def servers() -> dict[str, ServerState]:
        try:
            return runtime.servers()
        except HAProxyError:
            return {}
    return servers


def alert_in_haproxy(env: BenchEnv, rounds: int = 30) -> tuple[list[float], list[float]]:
    """Milliseconds from SET canary:alert on to HAProxy's runtime API holding the canary
    in maintenance (what the end-to-end tests wait for before judging requests), and
    from off to the canary back in rotation."""
    r = _redis(env)
    canary = sorted(_redis(env, ADMIN).hkeys(servers_key("canary")))[0]
    servers = _backend(env)
    out, back = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        r.set(CANARY_ALERT, "on")
        out.append(1000 * until(
            lambda: canary in (s := servers()) and s[canary].in_maintenance, t0,
            "the canary in maintenance", interval=0.001))
        time.sleep(0.3)  # pacing: the controller ends its pass (haproxy.cfg) first
        t0 = time.perf_counter()
        r.set(CANARY_ALERT, "off")
        back.append(1000 * until(
            lambda: canary in (s := servers()) and s[canary].in_rotation, t0,
            "the canary back in rotation", interval=0.001))
        time.sleep(0.3)
    return out, back


def server_membership(env: BenchEnv, rounds: int = 5) -> dict[str, list[float]]:
    """Milliseconds, with an extra gunicorn outside the inventory and no load: from HSET
    servers:prod to HAProxy having it in rotation (health check, haproxy.cfg, reload);
    from HDEL to it held out (maintenance: no new request); and to it removed (drained,
    reloaded)."""
    r = _redis(env, DEPLOYER)  # the server lists are the deployer's
    name, port = "bench-extra", free_port()
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "--bind", f"127.0.0.1:{port}",
         "--worker-class", "gthread", "--threads", "4", "--chdir", str(env.repo),
         "app:create_app()"],
        env=dict(os.environ, APP_INSTANCE_ID=name, APP_ROLE="prod",
                 APP_REDIS_URL=env.redis_url(APP)),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    servers = _backend(env)
    figures: dict[str, list[float]] = {"in rotation": [], "held out": [], "removed": []}

    def answers() -> bool:
        try:
            return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok
        except requests.RequestException:
            return False
    try:
        until(answers, time.perf_counter(), "the extra gunicorn answering", interval=0.05)
        for _ in range(rounds):
            t0 = time.perf_counter()
            r.hset(servers_key("prod"), name, f"127.0.0.1:{port}")
            figures["in rotation"].append(1000 * until(
                lambda: name in (s := servers()) and s[name].in_rotation, t0,
                "the extra server in rotation", interval=0.001))
            t0 = time.perf_counter()
            r.hdel(servers_key("prod"), name)
            figures["held out"].append(1000 * until(
                lambda: name not in (s := servers()) or s[name].in_maintenance, t0,
                "the extra server held out", interval=0.001))
            figures["removed"].append(1000 * until(
                lambda: (s := servers()) != {} and name not in s, t0,
                "the extra server removed", interval=0.001))
            time.sleep(0.3)  # pacing: the controller ends its pass first
    finally:
        r.hdel(servers_key("prod"), name)
        proc.terminate()
        proc.wait(15)
    return figures


# -- the monitor ----------------------------------------------------------------------
def slow_target_cycle(redis_url: str, rounds: int = 3) -> dict[str, float]:
    """One poll cycle, timeout 1 s, median of ``rounds``: with two fast endpoints (the
    baseline), then with one fast, one slow (answers after 3 s) and one dead (nothing
    listens). Seconds of the cycle and of the fast endpoint's answer in each."""
    port, dead = free_port(), free_port()
    stop = threading.Event()
    server = serve_endpoints([port], stop)
    fast = f"http://127.0.0.1:{port}/metrics"
    out: dict[str, float] = {}
    try:
        for label, targets in (
                ("fast only", [("fast", fast), ("fast-2", fast + "/2")]),
                ("with slow and dead", [("fast", fast),
                                        ("slow", f"http://127.0.0.1:{port}/slow"),
                                        ("dead", f"http://127.0.0.1:{dead}/metrics")])):
            cfg = MonitorConfig.model_validate({
                "interval_seconds": 1, "timeout_seconds": 1, "redis_url": redis_url,
                "targets": [{"id": i, "role": "prod", "url": u} for i, u in targets],
                "discover_roles": [], "canary": {"enabled": False}, "rules": []})
            monitor = Monitor(cfg)
            cycles, answers = [], []
            for _ in range(rounds):
                started = time.perf_counter()
                samples = asyncio.run(monitor.cycle())
                cycles.append(time.perf_counter() - started)
                answers.append(next(s.seconds for s in samples if s.target_id == "fast"))
                monitor.r.hdel(MONITOR_ALERTS, *[f"instance-down/{i}" for i, _ in targets])
            out[f"cycle, {label}"] = statistics.median(cycles)
            out[f"fast endpoint, {label}"] = statistics.median(answers)
    finally:
        stop.set()
        server.join(5)
    return out


def _subjects(env: BenchEnv) -> list[str]:
    box = mailbox.Maildir(str(env.home / "instances" / "proxy-1" / "monitor" / "Maildir"),
                          create=False)
    return [" ".join(str(m["Subject"]).split()) for m in box]


def _interval(env: BenchEnv) -> float:
    import yaml

    cfg = env.home / "instances" / "proxy-1" / "monitor" / "monitor.yml"
    return float(yaml.safe_load(cfg.read_text())["interval_seconds"])


def _supervisorctl(env: BenchEnv, instance: str, *args: str) -> str:
    conf = env.home / "instances" / instance / "supervisord.conf"
    return subprocess.run([str(Path(sys.executable).parent / "supervisorctl"), "-c",
                           str(conf), *args], capture_output=True, text=True, check=False,
                          timeout=60).stdout


def down_to_mail(env: BenchEnv) -> float:
    """Seconds from an instance's agent stopping (redis-1's) to the monitor's alert mail
    in the Maildir; the agent is started again after."""
    subject = "[cdpipe] FIRING instance-down/redis-1"
    before = _subjects(env).count(subject)
    t0 = time.perf_counter()
    _supervisorctl(env, "redis-1", "stop", "agent")
    try:
        return until(lambda: _subjects(env).count(subject) > before, t0, "the alert mail",
                     120, interval=0.05)
    finally:
        _supervisorctl(env, "redis-1", "start", "agent")


def canary_judgement(env: BenchEnv) -> float:
    """Seconds from load starting on a canary release that fails 40% of its requests to
    the monitor setting canary:alert on; the canary is rolled back after."""
    flaky = commit_flaky_release(env.repo, "bench-flaky")
    r = _redis(env)
    env.cdpipe("deploy", "--ref", flaky, "--target", "canary")
    stop = threading.Event()

    def load() -> None:
        with requests.Session() as s:
            deadline = time.monotonic() + 180
            while not stop.is_set() and time.monotonic() < deadline:
                s.cookies.clear()
                try:
                    s.get(f"http://127.0.0.1:{env.port_base}/", timeout=5)
                except requests.RequestException:
                    stop.wait(0.1)  # pacing after a failure
    workers = [threading.Thread(target=load, daemon=True) for _ in range(3)]
    t0 = time.perf_counter()
    for w in workers:
        w.start()
    try:
        return until(lambda: r.get(CANARY_ALERT) == "on", t0, "the canary alert", 120,
                     interval=0.05)
    finally:
        stop.set()
        for w in workers:
            w.join(10)
        env.cdpipe("canary", "rollback")
        r.set(CANARY_ALERT, "off")


def report(env: BenchEnv) -> None:
    def row(name: str, values: list[float], base: list[float] | None = None) -> str:
        ratio = f"{statistics.median(values) / statistics.median(base):.1f}" if base else "-"
        return (f"| {name} | {len(values)} | {statistics.median(values):.1f} "
                f"| {_percentile(values, 99):.1f} | {max(values):.1f} | {ratio} |")

    cached, baseline = cache_notification()
    print("\n## Until a change is in force (ms; what the tests wait for, not assert)")
    print("| change -> seen | samples | p50 | p99 | max | p50 vs baseline |")
    print("|---|---|---|---|---|---|")
    print(row("SET flag -> the app's cache (notification, in process)", cached, baseline))
    print(row("baseline: SET, then GET by a second client", baseline))
    print(row("SET flag:hiddenfeature -> every app instance (asked directly)",
              flag_everywhere(env)))
    out, back = alert_in_haproxy(env)
    print(row("SET canary:alert on -> canary in maintenance (HAProxy runtime API)", out))
    print(row("SET canary:alert off -> canary back in rotation", back))
    members = server_membership(env)
    print(row("HSET servers:prod -> in rotation (health check, reload)",
              members["in rotation"]))
    print(row("HDEL servers:prod -> held out (maintenance)", members["held out"]))
    print(row("HDEL servers:prod -> removed (drained, reloaded)", members["removed"]))

    cycle = slow_target_cycle(env.redis_url(MONITOR))
    print("\n## A poll cycle with a slow (3 s) and a dead endpoint, timeout 1 s "
          "(median of 3, s)")
    print("| measure | fast only | with slow and dead | ratio |")
    print("|---|---|---|---|")
    for what in ("cycle", "fast endpoint"):
        a, b = cycle[f"{what}, fast only"], cycle[f"{what}, with slow and dead"]
        print(f"| {what} | {a:.3f} | {b:.3f} | {b / a:.1f} |")
    print(f"| cycle / the 1 s timeout | - | {cycle['cycle, with slow and dead']:.2f} | - |")

    interval = _interval(env)
    mail, judged = down_to_mail(env), canary_judgement(env)
    print(f"\n## Monitor reactions ({interval:.0f} s polls)")
    print("| from -> to | s | polls |")
    print("|---|---|---|")
    print(f"| an agent stopped -> its alert mail | {mail:.1f} | {mail / interval:.1f} |")
    print(f"| load on a canary failing 40% -> canary:alert on | {judged:.1f} "
          f"| {judged / interval:.1f} |")
