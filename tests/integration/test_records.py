"""The runtime records the dashboard reads, on a real redis-server that runs the redis
role's ACL rules, each written as the user that writes it in production and read back
as the operator through ``cdpipe.records``: the monitor's samples (kept across
a restart), the alert history, the canary verdict, the deploy history of Environment
(done and failed, and what happens when Redis does not take it); entries that do not
read are skipped; and the CLI's `flag delete` and `canary weight`."""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from cdpipe import canary, records, secret_files
from cdpipe.config import Settings
from cdpipe.environment import Environment
from cdpipe.errors import CdpipeError
from cdpipe.model import APP_ROLES, Instance, machine_ports
from cdpipe.redis_users import password_name
from cdpipe.state import State, save
from cdpipe_host.keys import (
    CANARY_WEIGHT,
    DEPLOY_HISTORY,
    HISTORY_LENGTH,
    MONITOR_ALERT_HISTORY,
    MONITOR_ALERTS,
    MONITOR_CANARY_VERDICT,
    MONITOR_SAMPLES,
    MONITOR_SCALE_EVENTS,
    flag_key,
)
from devkit import cdpipe_env, free_port
from devkit.acl_redis import AclRedis
from monitoring.alerts import AlertBook
from monitoring.canary_judge import Judge
from monitoring.config import CanaryJudge
from monitoring.samples import KEEP, SampleHistory
from monitoring.scrape import Sample
from tests.support import clean, home_on, server  # noqa: F401 (fixtures)

CDPIPE = str(Path(sys.executable).parent / "cdpipe")
COMMIT = "c0ffee" + "0" * 34


def sample(target: str, role: str = "prod", cpu: float | None = 10.0,
           mem: float | None = 20.0, error: str = "") -> Sample:
    s = Sample(target, role, ok=not error, error=error)
    if cpu is not None:
        s.gauges["instance_cpu_percent"] = cpu
    if mem is not None:
        s.gauges["instance_memory_percent"] = mem
    return s


# -- monitor:samples -------------------------------------------------------------------
def test_samples_keep_the_last_polls_of_each_target_oldest_first(server: AclRedis) -> None:
    history = SampleHistory(server.client("monitor"))
    for i in range(KEEP + 5):
        assert history.record([sample("prod-1", cpu=float(i)),
                               sample("canary-1", "canary", error="Timeout")], 1000.0 + i)
    read = records.read_samples(server.client("operator"))
    assert set(read) == {"prod-1", "canary-1"}
    prod = read["prod-1"]
    assert (prod["role"], prod["ok"], prod["error"]) == ("prod", True, "")
    assert prod["t"] == [1000.0 + i for i in range(5, KEEP + 5)]
    assert prod["cpu"] == [float(i) for i in range(5, KEEP + 5)]
    assert prod["mem"] == [20.0] * KEEP
    down = read["canary-1"]
    assert (down["ok"], down["error"]) == (False, "Timeout")
    assert down["cpu"] == down["mem"] == [None] * KEEP and len(down["t"]) == KEEP


def test_a_target_no_longer_polled_leaves_the_hash(server: AclRedis) -> None:
    history = SampleHistory(server.client("monitor"))
    history.record([sample("prod-1"), sample("prod-2")], 1.0)
    history.record([sample("prod-1")], 2.0)
    assert set(records.read_samples(server.client("operator"))) == {"prod-1"}


def test_a_restarted_monitor_keeps_the_sparklines(server: AclRedis) -> None:
    """Seeded from the hash: the old polls come before the new monitor's, and a target
    gone while it was down leaves the hash at its first write."""
    first = SampleHistory(server.client("monitor"))
    for i in range(3):
        first.record([sample("prod-1", cpu=float(i)), sample("prod-9")], 100.0 + i)
    restarted = SampleHistory(server.client("monitor"))
    restarted.record([sample("prod-1", cpu=50.0, mem=None)], 200.0)
    read = records.read_samples(server.client("operator"))
    assert set(read) == {"prod-1"}
    assert read["prod-1"]["t"] == [100.0, 101.0, 102.0, 200.0]
    assert read["prod-1"]["cpu"] == [0.0, 1.0, 2.0, 50.0]
    assert read["prod-1"]["mem"] == [20.0, 20.0, 20.0, None]


def test_samples_redis_refuses_are_logged_and_kept(
        server: AclRedis, caplog: pytest.LogCaptureFixture) -> None:
    down = redis.Redis(port=free_port(), decode_responses=True, socket_timeout=1,
                       socket_connect_timeout=1)
    history = SampleHistory(down)
    with caplog.at_level(logging.WARNING):
        assert not history.record([sample("prod-1", cpu=1.0)], 1.0)
    assert "samples not recorded in monitor:samples" in caplog.text
    # Back (the same object's client now answers): the polls kept meanwhile are written.
    history.r = server.client("monitor")
    assert history.record([sample("prod-1", cpu=2.0)], 2.0)
    assert records.read_samples(server.client("operator"))["prod-1"]["cpu"] == [1.0, 2.0]


# -- monitor:alerts, monitor:alerts:history --------------------------------------------
def test_firing_and_resolved_are_recorded_with_the_last_value(server: AclRedis) -> None:
    book = AlertBook(server.client("monitor"), repeat_interval=60)
    operator = server.client("operator")
    assert book.observe("cpu/prod-1", True, 2, "cpu 91.0 > 80", now=100.0, value=91.0) is None
    [pending] = records.read_alerts(operator)
    assert pending == {"alert": "cpu/prod-1", "state": "pending", "since": 100.0,
                       "summary": "cpu 91.0 > 80", "value": 91.0}
    assert records.read_alert_history(operator) == []  # pending is no transition
    assert book.observe("cpu/prod-1", True, 2, "cpu 95.0 > 80", now=110.0,
                        value=95.0) == "firing"
    assert book.observe("cpu/prod-1", True, 2, "cpu 96.0 > 80", now=200.0,
                        value=96.0) == "reminder"
    [firing] = records.read_alerts(operator)
    assert (firing["state"], firing["since"], firing["value"]) == ("firing", 110.0, 96.0)
    assert book.observe("cpu/prod-1", False, 2, "", now=300.0, clear_polls=1,
                        value=12.0) == "resolved"
    assert records.read_alerts(operator) == []
    assert records.read_alert_history(operator) == [
        {"alert": "cpu/prod-1", "event": "resolved", "at": 300.0, "since": 110.0,
         "summary": "cpu 96.0 > 80", "value": 12.0},
        {"alert": "cpu/prod-1", "event": "firing", "at": 110.0, "since": 110.0,
         "summary": "cpu 95.0 > 80", "value": 95.0},
    ]


def test_an_alert_state_stored_before_values_still_reads(server: AclRedis) -> None:
    admin = server.client("admin")
    admin.hset(MONITOR_ALERTS, "instance-down/prod-1", json.dumps(
        {"state": "firing", "count": 3, "since": 50.0, "last_sent": 50.0,
         "summary": "prod-1 does not answer", "clear": 0}))
    book = AlertBook(server.client("monitor"), repeat_interval=3600)
    assert set(book.load()) == {"instance-down/prod-1"}
    [alert] = records.read_alerts(server.client("operator"))
    assert (alert["state"], alert["value"]) == ("firing", None)
    assert book.observe("instance-down/prod-1", False, 1, "", now=60.0) == "resolved"
    [resolved] = records.read_alert_history(server.client("operator"))
    assert (resolved["event"], resolved["since"], resolved["value"]) == ("resolved", 50.0, None)


def test_the_alert_history_keeps_the_newest(server: AclRedis) -> None:
    book = AlertBook(server.client("monitor"), repeat_interval=3600)
    for i in range(HISTORY_LENGTH // 2 + 3):
        book.observe(f"a/{i}", True, 1, "hot", now=float(i), value=float(i))
        book.observe(f"a/{i}", False, 1, "", now=float(i) + 0.5)
    operator = server.client("operator")
    assert operator.llen(MONITOR_ALERT_HISTORY) == HISTORY_LENGTH
    newest = records.read_alert_history(operator, count=3)
    assert [(e["alert"], e["event"]) for e in newest] == [
        ("a/52", "resolved"), ("a/52", "firing"), ("a/51", "resolved")]


def test_firing_alerts_come_before_pending_ones(server: AclRedis) -> None:
    book = AlertBook(server.client("monitor"), repeat_interval=3600)
    book.observe("late", True, 5, "pending", now=1.0)
    book.observe("b", True, 1, "firing", now=20.0)
    book.observe("a", True, 1, "firing", now=10.0)
    assert [a["alert"] for a in records.read_alerts(server.client("operator"))] == [
        "a", "b", "late"]


# -- monitor:canary:verdict ------------------------------------------------------------
def test_the_monitor_records_each_verdict(server: AclRedis) -> None:
    from monitoring.config import MonitorConfig
    from monitoring.monitor import Monitor

    cfg = MonitorConfig.model_validate({
        "redis_url": server.url("monitor"), "targets": [], "discover_roles": [],
        "rules": [], "canary": {"enabled": True, "min_requests": 20}})
    monitor = Monitor(cfg)
    before = time.time()
    monitor.judge_canary([])
    verdict = records.read_verdict(server.client("operator"))
    assert verdict is not None and before <= verdict.pop("at") <= time.time()
    assert before <= verdict.pop("window_start") <= time.time()  # the judge's first poll
    assert verdict == {"decided": False, "failed": False, "commit": "",
                       "reason": "no verdict yet: 0 canary and 0 prod requests (need 20)",
                       "canary": {"requests": 0.0, "error_rate": 0.0, "p95_ms": None},
                       "prod": {"requests": 0.0, "error_rate": 0.0, "p95_ms": None},
                       "last_decided": None}


def test_a_new_window_keeps_the_last_decided_verdict_in_view(server: AclRedis) -> None:
    """After a failed verdict the judge starts again ("no verdict yet"): the record
    still says why the canary was taken out."""
    from monitoring.canary_judge import Verdict
    from monitoring.config import MonitorConfig
    from monitoring.monitor import Monitor
    from monitoring.records import SideRecord

    cfg = MonitorConfig.model_validate({
        "redis_url": server.url("monitor"), "targets": [], "discover_roles": [],
        "rules": [], "canary": {"enabled": True}})
    monitor = Monitor(cfg)
    failed = Verdict(True, True, "canary 5xx rate 40.0% vs prod 0.0%",
                     SideRecord(requests=50, error_rate=0.4, p95_ms=12.0),
                     SideRecord(requests=100, error_rate=0.0, p95_ms=10.0))
    monitor.record_verdict(failed)
    monitor.record_verdict(Verdict(False, False, "no verdict yet"))
    verdict = records.read_verdict(server.client("operator"))
    assert verdict is not None and verdict["decided"] is False
    last = verdict["last_decided"]
    assert last["failed"] is True and last["reason"] == failed.reason
    assert last["canary"] == {"requests": 50, "error_rate": 0.4, "p95_ms": 12.0}


def test_a_verdict_redis_refuses_does_not_stop_the_judge(
        caplog: pytest.LogCaptureFixture) -> None:
    from monitoring.monitor import Monitor

    monitor = Monitor.__new__(Monitor)
    monitor.r = redis.Redis(port=free_port(), socket_timeout=1, socket_connect_timeout=1)
    monitor.judge = Judge(CanaryJudge(min_requests=20))
    monitor.last_decided = None
    monitor.proxy = None
    with caplog.at_level(logging.WARNING):
        monitor.judge_canary([])  # undecided: no other Redis call follows
    assert "canary verdict not recorded in monitor:canary:verdict" in caplog.text


# -- reading what does not read ------------------------------------------------------
def test_entries_that_do_not_read_are_skipped(server: AclRedis) -> None:
    admin = server.client("admin")
    admin.hset(MONITOR_SAMPLES, mapping={
        "prod-1": json.dumps({"role": "prod", "ok": True, "error": "", "t": [1.0],
                              "cpu": [5.0], "mem": [6.0]}),
        "bad-json": "{not json", "a-list": "[1, 2]", "short": json.dumps(
            {"t": [1.0, 2.0], "cpu": [1.0], "mem": [1.0]}),
        "nan": '{"role": "prod", "ok": true, "t": [1.0], "cpu": [NaN], "mem": [Infinity]}'})
    state = {"state": "firing", "count": 3, "since": 5.0, "last_sent": 5.0, "summary": "s"}
    admin.hset(MONITOR_ALERTS, mapping={
        "x": "nonsense", "y": json.dumps(state | {"state": "gone"}),
        "z": json.dumps(state | {"since": "soon"}), "c": json.dumps(state | {"count": True}),
        "w": json.dumps(state)[:-1] + ', "value": NaN}'})
    good = {MONITOR_ALERT_HISTORY: {"alert": "w", "event": "firing", "at": 1.0},
            MONITOR_SCALE_EVENTS: {"at": 1.0, "direction": "out", "ok": True, "line": "l"},
            DEPLOY_HISTORY: {"at": 1.0, "finished": 2.0, "commit": "c" * 40, "ref": "r",
                             "target": "prod", "command": "deploy", "result": "ok"}}
    for key, entry in good.items():
        first, second = (json.dumps(entry | {"at": at}) for at in (1.0, 2.0))
        admin.rpush(key, first, '{"ok": 1}', "{", "[]", '"text"', "\xff",
                    json.dumps(entry | {"at": "yesterday"}), second)
    admin.set(MONITOR_CANARY_VERDICT, "[not an object]")
    operator = server.client("operator")
    samples = records.read_samples(operator)
    assert set(samples) == {"prod-1", "nan"}
    assert samples["nan"]["cpu"] == [None] and samples["nan"]["mem"] == [None]
    assert records.read_alerts(operator) == [
        {"alert": "w", "state": "firing", "since": 5.0, "summary": "s", "value": None}]
    readers = {MONITOR_ALERT_HISTORY: records.read_alert_history,
               MONITOR_SCALE_EVENTS: records.read_scale_events,
               DEPLOY_HISTORY: records.read_deploys}
    for key, read in readers.items():
        assert [(e["at"], {k: e[k] for k in good[key] if k != "at"}) for e in read(operator)
                ] == [(at, {k: v for k, v in good[key].items() if k != "at"})
                      for at in (1.0, 2.0)], key
        assert [e["at"] for e in read(operator, count=1)] == [1.0]
        assert read(operator, count=0) == []
    assert records.read_verdict(operator) is None
    admin.delete(MONITOR_CANARY_VERDICT)
    assert records.read_verdict(operator) is None
    # Everything it returns is JSON a browser reads (no NaN, no infinity).
    json.dumps([records.read_samples(operator), records.read_alerts(operator)],
               allow_nan=False)


def test_nothing_recorded_reads_as_empty(server: AclRedis) -> None:
    operator = server.client("operator")
    assert records.read_samples(operator) == {}
    assert records.read_alerts(operator) == []
    assert records.read_alert_history(operator) == []
    assert records.read_scale_events(operator) == []
    assert records.read_deploys(operator) == []
    assert records.read_verdict(operator) is None


# -- deploy:history --------------------------------------------------------------------
def environment(home: Path, redis_port: int, lines: list[str],
                passwords: dict[str, str]) -> Environment:
    """A local environment that is up (Redis: ``redis_port``), its playbooks replaced."""
    secrets_dir = home / "secrets"
    secrets_dir.mkdir(parents=True)
    for user, password in passwords.items():
        (secrets_dir / password_name(user)).write_text(password + "\n")
    secret_files.ensure(secrets_dir)  # the other secrets an `up` made
    instances = [Instance(id="redis-1", role="redis", host="127.0.0.1",
                          ports=machine_ports("redis") | {"redis": redis_port},
                          provider="local")]
    instances += [Instance(id=f"{role}-1", role=role, host="127.0.0.1",
                           ports=machine_ports(role), provider="local") for role in APP_ROLES]
    save(home / "state.json", State(provider="local", instances=instances,
                                    deployed={"prod": COMMIT, "canary": COMMIT}))
    env = Environment(Settings(home=home, port_base=31500), show=lines.append)
    env.resolve = lambda ref: COMMIT  # type: ignore[method-assign]
    return env


def test_each_deploy_is_recorded_done_or_failed(
        server: AclRedis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lines: list[str] = []
    env = environment(tmp_path / "home", server.port, lines, server.passwords)
    monkeypatch.setattr(env, "_playbook", lambda *a, **k: None)
    before = time.time()
    env.deploy("main", None)
    canary.rollback(env)
    failure = CdpipeError("deploy.yml failed on prod-1 at 'app : Wait'\nsecond line")

    def failing(*args: object, **kwargs: object) -> None:
        raise failure

    monkeypatch.setattr(env, "_playbook", failing)
    with pytest.raises(CdpipeError) as raised:
        env.deploy("v2", "prod")
    assert raised.value is failure  # the deploy's own exception, unchanged
    deploys = records.read_deploys(server.client("operator"))
    assert [(d["command"], d["target"], d["ref"], d["result"]) for d in deploys] == [
        ("deploy", "prod", "v2", "failed"),
        ("canary rollback", "canary", COMMIT, "ok"),
        ("deploy", "prod,canary", "main", "ok")]
    failed, _, done = deploys
    assert failed["error"] == "deploy.yml failed on prod-1 at 'app : Wait'\\nsecond line"
    assert done["error"] == "" and done["commit"] == COMMIT
    assert before <= done["at"] <= done["finished"] <= failed["at"] <= time.time()
    assert done["by"].count("@") == 1
    assert not [line for line in lines if "not recorded" in line]


def test_a_deploy_goes_on_when_redis_does_not_take_its_record(
        server: AclRedis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lines: list[str] = []
    env = environment(tmp_path / "home", free_port(), lines, server.passwords)
    played: list[str] = []
    monkeypatch.setattr(env, "_playbook", lambda playbook, *a, **k: played.append(playbook))
    env.deploy("main", "canary")
    assert played == ["deploy.yml"]
    assert env.state.deployed["canary"] == COMMIT
    [line] = [line for line in lines if DEPLOY_HISTORY in line]
    assert line.startswith(f"the deploy of {COMMIT[:12]} was not recorded in deploy:history")
    assert "\n" not in line


def test_a_wrong_deployer_password_is_one_line_too(
        server: AclRedis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lines: list[str] = []
    passwords = dict(server.passwords, deployer="wrong")
    env = environment(tmp_path / "home", server.port, lines, passwords)
    monkeypatch.setattr(env, "_playbook", lambda *a, **k: None)
    env.deploy("main", "prod")
    assert len([line for line in lines if "not recorded in deploy:history" in line]) == 1
    assert server.client("admin").exists(DEPLOY_HISTORY) == 0


# -- the CLI -----------------------------------------------------------------------------
def cdpipe(server: AclRedis, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    if not (home / "state.json").exists():
        home_on(server, home)
    return subprocess.run([CDPIPE, *args], env=cdpipe_env(home, 31500), capture_output=True,
                          text=True, timeout=60, check=False)


def test_flag_delete_says_whether_the_flag_was_set(server: AclRedis, tmp_path: Path) -> None:
    server.client("operator").set(flag_key("beta"), "on")
    out = cdpipe(server, tmp_path, "flag", "delete", "beta")
    assert (out.returncode, out.stdout, out.stderr) == (
        0, "flag:beta deleted (reads as off)\n", "")
    assert server.client("admin").exists(flag_key("beta")) == 0
    out = cdpipe(server, tmp_path, "flag", "delete", "beta")
    assert (out.returncode, out.stdout) == (0, "flag:beta was not set\n")
    out = cdpipe(server, tmp_path, "flag", "delete", "a\nb")
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.startswith("error: invalid flag name 'a\\nb'")


def test_canary_weight_writes_the_weight(server: AclRedis, tmp_path: Path) -> None:
    out = cdpipe(server, tmp_path, "canary", "weight", "10")
    assert (out.returncode, out.stdout, out.stderr) == (0, "canary:weight = 10\n", "")
    assert server.client("admin").get(CANARY_WEIGHT) == "10"
    for bad in ("101", "5%", "ten", "1.5"):
        out = cdpipe(server, tmp_path, "canary", "weight", bad)
        assert out.returncode == 1 and out.stdout == "", bad
        assert out.stderr == (f"error: invalid canary weight '{bad}': use an integer "
                              "from 0 to 100\n"), bad
    assert server.client("admin").get(CANARY_WEIGHT) == "10"


def test_math_is_finite_everywhere_it_matters() -> None:
    """The records' own guard: a measure JSON cannot hold (NaN, infinity, a boolean)
    reads as None, and a writer never writes one."""
    from monitoring.records import AlertEvent

    for raw in ("NaN", "Infinity", "-Infinity", "true"):
        event = AlertEvent.loads(f'{{"alert": "a", "event": "firing", "at": 1, '
                                 f'"value": {raw}}}')
        assert event is not None and event.value is None, raw
    assert AlertEvent(alert="a", event="firing", at=1.0, value=3).value == 3.0
    assert json.loads(AlertEvent(alert="a", event="firing", at=1.0,
                                 since=math.inf).dumps())["since"] is None


def test_promote_needs_the_judges_decided_pass_of_the_canarys_own_release(
        server: AclRedis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A canary promoted seconds after its deploy was judged on the release before it:
    promote now needs a decided, passing verdict naming the canary's commit (the last
    decided one when the latest is not decided), and --now skips that, saying so."""
    lines: list[str] = []
    env = environment(tmp_path / "home", server.port, lines, server.passwords)
    deployed: list[str] = []
    def deploy(commit: str, target: str, command: str, stop_on_canary_alert: bool) -> None:
        assert (commit, target, stop_on_canary_alert) == (COMMIT, "prod", True)
        deployed.append(command)
    monkeypatch.setattr(env, "deploy", deploy)
    admin = server.client("admin")
    side = {"requests": 40.0, "error_rate": 0.0, "p95_ms": 20.0}
    passed = {"at": 1.0, "decided": True, "failed": False, "reason": "canary healthy",
              "canary": side, "prod": side, "commit": COMMIT, "window_start": 0.5}
    refused = {
        "no verdict recorded": None,
        "no decided verdict": passed | {"decided": False, "reason": "no verdict yet: 3"},
        "not of the canary's release": passed | {"commit": "b" * 40},
        "failed the canary's release": passed | {"failed": True, "reason": "5xx 30%"},
    }
    for words, verdict in refused.items():
        if verdict is None:
            admin.delete(MONITOR_CANARY_VERDICT)
        else:
            admin.set(MONITOR_CANARY_VERDICT, json.dumps(verdict))
        with pytest.raises(CdpipeError, match=words):
            canary.promote(env, show=lines.append)
    assert deployed == []
    # The latest verdict is a new window's "not yet"; the last decided one passed.
    admin.set(MONITOR_CANARY_VERDICT, json.dumps(
        passed | {"decided": False, "reason": "no verdict yet", "last_decided": passed}))
    canary.promote(env, show=lines.append)
    assert deployed == ["canary promote"] and "the judge passed" in lines[-1]
    admin.delete(MONITOR_CANARY_VERDICT)
    canary.promote(env, now=True, show=lines.append)
    assert deployed[-1] == "canary promote --now" and "--now" in lines[-1]
