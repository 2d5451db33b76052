"""Monitoring end to end, on an environment of its own with 1-second polls: alert mail,
autoscaling out and in under load, SMTP outages, monitor restarts, canary judgement."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from tests.e2e.conftest import LocalEnv, make_env
from tests.e2e.load import Load
from tests.support import commit_change, git, maildir_subjects, wait_until

pytestmark = pytest.mark.e2e

RULES = """\
rules:
  - name: prod-cpu-each
    metric: cpu_percent
    role: prod
    aggregate: each
    upper: 20  # prod-1 burns 35-50% (one core of two) even while Ansible competes
    for: 2
    keep_firing_for: 3  # a scale-out's Ansible run takes CPU from prod-1 for a poll or two
  - name: prod-cpu
    metric: cpu_percent
    role: prod
    upper: 30
    lower: 5
    for: 2
    scale: true
"""


@pytest.fixture(scope="module")
def mon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalEnv]:
    root = tmp_path_factory.mktemp("e2e-monitor")
    env = make_env(root)
    (root / "rules.yml").write_text(RULES)
    git(env.repo, "checkout", "-q", "-b", "flaky", env.new)
    env.flaky = commit_change(  # type: ignore[attr-defined]
        env.repo, "app/views.py",
        (env.repo / "app" / "views.py").read_text().replace(
            "    cfg = current_app.config\n    return jsonify(",
            "    cfg = current_app.config\n    if time.perf_counter_ns() % 10 < 4:\n"
            "        return jsonify(error='flaky'), 500\n    return jsonify(", 1),
        "a canary release that fails 40% of requests")
    git(env.repo, "checkout", "-q", "main")
    try:
        env.cdpipe("up", "--ref", env.new, "--monitor-interval", "1", "--scale-cooldown", "5",
                   "--monitor-rules", str(root / "rules.yml"))
        yield env
    finally:
        env.cdpipe("down", check=False)


def maildir(env: LocalEnv) -> Path:
    return env.home / "instances" / "proxy-1" / "monitor" / "Maildir"


def subjects(env: LocalEnv) -> list[str]:
    return maildir_subjects(maildir(env))


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> float:
    return wait_until(check, timeout, what, interval=0.2)


def prod_ids(env: LocalEnv) -> list[str]:
    report = json.loads(env.cdpipe("status", "--json").stdout)
    return sorted(i["id"] for i in report["instances"] if i["role"] == "prod")


def burn(url: str, stop: threading.Event, threads: int = 3) -> list[threading.Thread]:
    def run() -> None:
        with requests.Session() as session:
            deadline = time.monotonic() + 180
            while not stop.is_set() and time.monotonic() < deadline:
                try:
                    session.get(url + "/burn?ms=300", timeout=10)
                except requests.RequestException:
                    time.sleep(0.1)
    workers = [threading.Thread(target=run, daemon=True) for _ in range(threads)]
    for w in workers:
        w.start()
    return workers


def test_status_reports_the_maildir(mon: LocalEnv) -> None:
    report = json.loads(mon.cdpipe("status", "--json").stdout)
    assert report["mail"]["maildir"] == str(maildir(mon))
    assert maildir(mon).is_dir()


def test_cpu_load_alerts_once_scales_out_then_in_without_failures(mon: LocalEnv) -> None:
    r = mon.redis()
    r.set("flag:cpuburn", "on")
    stop = threading.Event()
    workers = burn(mon.url(2), stop)  # straight at prod-1: it stays hot
    try:
        # One alert mail within 3 polls (1 s each, plus a poll's own time under load).
        wait_for(lambda: "[cdpipe] FIRING prod-cpu-each/prod-1" in subjects(mon), 12,
                 "alert mail")
        wait_for(lambda: len(prod_ids(mon)) == 2, 120, "scale-out")
        new_id = next(i for i in prod_ids(mon) if i != "prod-1")
        # The new instance serves through the proxy (once deployed and healthy).
        def serves() -> bool:
            with requests.Session() as session:
                for _ in range(20):
                    session.cookies.clear()
                    if session.get(mon.proxy_url + "/", timeout=5).json()["instance"] == new_id:
                        return True
            return False

        wait_for(serves, 120, f"{new_id} serving through the proxy")
        assert subjects(mon).count("[cdpipe] FIRING prod-cpu-each/prod-1") == 1
        wait_for(lambda: any(s.startswith("[cdpipe] SCALE OUT: scaled out: " + new_id)
                             for s in subjects(mon)), 20, "scale-out mail")
        # A light, steady load: requests run continuously while prod idles below 5%.
        with Load(mon.proxy_url + "/", threads=3, max_seconds=150, pause=0.1) as load:
            stop.set()
            for w in workers:
                w.join(15)
            wait_for(lambda: prod_ids(mon) == ["prod-1"], 120, "scale-in")
            time.sleep(1)
        assert load.failures() == []
        assert len(load.samples) > 50
        wait_for(lambda: "[cdpipe] RESOLVED prod-cpu-each/prod-1" in subjects(mon), 15,
                 "resolved mail")
        assert subjects(mon).count("[cdpipe] FIRING prod-cpu-each/prod-1") == 1
        wait_for(lambda: any(s.startswith("[cdpipe] SCALE IN: scaled in: " + new_id)
                             for s in subjects(mon)), 20, "scale-in mail")
    finally:
        stop.set()
        r.set("flag:cpuburn", "off")


def test_mail_waits_for_a_stopped_smtp_server(mon: LocalEnv) -> None:
    mon.supervisorctl("proxy-1", "stop", "mailsink")
    mon.supervisorctl("redis-1", "stop", "agent")  # instance-down/redis-1 fires
    try:
        key = "instance-down/redis-1"
        wait_for(lambda: key in mon.redis().hgetall("monitor:alerts")
                 and json.loads(mon.redis().hget("monitor:alerts", key))["state"] == "firing",
                 15, "alert firing")
        time.sleep(2)
        assert f"[cdpipe] FIRING {key}" not in subjects(mon)
        assert mon.redis().llen("monitor:outbox") >= 1
    finally:
        mon.supervisorctl("proxy-1", "start", "mailsink")
    wait_for(lambda: f"[cdpipe] FIRING {key}" in subjects(mon), 40, "mail after SMTP is back")


def test_restarted_monitor_sends_no_duplicate(mon: LocalEnv) -> None:
    key = "instance-down/redis-1"  # still firing: the agent is stopped
    pid = int(mon.supervisorctl("proxy-1", "pid", "monitor"))
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: mon.supervisorctl("proxy-1", "pid", "monitor") not in ("", "0", str(pid)),
             20, "monitor restarted")
    time.sleep(5)  # several polls of the restarted monitor
    assert subjects(mon).count(f"[cdpipe] FIRING {key}") == 1
    mon.supervisorctl("redis-1", "start", "agent")
    wait_for(lambda: f"[cdpipe] RESOLVED {key}" in subjects(mon), 20, "resolved mail")
    assert subjects(mon).count(f"[cdpipe] FIRING {key}") == 1


def test_failing_canary_is_taken_out_automatically(mon: LocalEnv) -> None:
    r = mon.redis()
    mon.cdpipe("deploy", "--ref", mon.flaky, "--target", "canary")  # type: ignore[attr-defined]
    try:
        with Load(mon.proxy_url + "/", threads=3, max_seconds=60) as load:
            t0 = time.monotonic()
            took = wait_for(lambda: r.get("canary:alert") == "on", 20, "canary alert")
            t_alert = time.monotonic()
            time.sleep(1.5)
        assert took < 3 * 1 + 3, took  # within 3 polls of 1 s once traffic flows (+ margin)
        late = [s for s in load.samples if s.started > t_alert + 0.2]
        assert late and all(s.role == "prod" for s in late)
        wait_for(lambda: any(s.startswith("[cdpipe] CANARY ALERT") for s in subjects(mon)),
                 10, "canary mail")
        del t0
    finally:
        mon.cdpipe("canary", "rollback")
        r.set("canary:alert", "off")
