"""Guards of a failing scale action, against a real redis-server and a stand-in for
`cdpipe scale` (a script that exits with the codes it is given, one per call): a
failure (AWS refused: exit 4; a new instance that never became healthy and was
terminated: exit 1) is mailed once per failing streak, retried at the cooldown and not
at every poll, not mailed again on each retry nor by a restarted monitor (the streak is
in Redis, monitor:scale:failing), reminded after the repeat interval, and the success
that ends it is mailed as a recovery."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import pytest
import redis

from cdpipe_host.keys import MONITOR_SCALE_FAILING
from devkit import free_port
from monitoring.autoscaler import AWS_REFUSED, FAILING, LAST_ACTION, Autoscaler, Decision
from monitoring.config import CanaryJudge, MonitorConfig, Rule, Scaling, Smtp
from monitoring.mailer import OUTBOX
from monitoring.monitor import Monitor

COOLDOWN = 300.0
REMIND = 3600.0
RULE = Rule.model_validate({"name": "prod-cpu", "metric": "cpu_percent", "role": "prod",
                            "upper": 40, "lower": 5, "for": 2, "scale": True})
OUT = Decision("out", "prod cpu_percent average 93.0 above 40.0 for 2 polls")
REFUSED_LINE = ("AWS refused creating instances: InsufficientInstanceCapacity: no "
                "capacity; try another instance type (CDPIPE_AWS_INSTANCE_TYPE) or "
                "subnet, or raise the limit")
UNHEALTHY_LINE = ("prod-9 did not become healthy: taken out of servers:prod and "
                  "terminated; scale.yml failed on prod-9 at 'Wait for health'")

# `cdpipe scale DIRECTION --max N` stand-in: the Nth call exits with the Nth code of the
# JSON list in the codes file (the last one repeats), printing what cdpipe prints.
SCALE_SCRIPT = f"""\
import json, sys
codes_file, calls_file, *args = sys.argv[1:]
codes = json.load(open(codes_file))
with open(calls_file, "a") as fh:
    fh.write(json.dumps(args) + "\\n")
n = len(open(calls_file).read().splitlines())
code = codes[min(n, len(codes)) - 1]
if code == 0:
    print(f"scaled {{args[0]}}: prod-{{n}} (10.0.0.{{n}}:8000) serves abc123")
elif code == {AWS_REFUSED}:
    print("error: {REFUSED_LINE}", file=sys.stderr)
else:
    print("created prod-9 at http://10.0.0.9:8000; deploying abc123")
    print("error: {UNHEALTHY_LINE}", file=sys.stderr)
sys.exit(code)
"""


class ScaleCommand:
    def __init__(self, tmp_path: Path) -> None:
        self.script = tmp_path / "fake_cdpipe_scale.py"
        self.script.write_text(SCALE_SCRIPT, encoding="utf-8")
        self.codes = tmp_path / "codes.json"
        self.calls_file = tmp_path / "calls.jsonl"

    def exiting(self, *codes: int) -> list[str]:
        self.codes.write_text(json.dumps(list(codes)), encoding="utf-8")
        return [sys.executable, str(self.script), str(self.codes), str(self.calls_file)]

    def calls(self) -> int:
        return len(self.calls_file.read_text().splitlines()) if self.calls_file.exists() else 0


@pytest.fixture
def command(tmp_path: Path) -> ScaleCommand:
    return ScaleCommand(tmp_path)


def scaler(r: redis.Redis, cmd: list[str]) -> Autoscaler:
    return Autoscaler(Scaling(command=cmd, cooldown_seconds=COOLDOWN), r, REMIND)


def cooldown_over(r: redis.Redis) -> None:
    r.set(LAST_ACTION, str(time.time() - COOLDOWN - 1))


def test_a_refused_scale_out_is_mailed_once_per_streak_then_its_recovery(
        r: redis.Redis, command: ScaleCommand, caplog: pytest.LogCaptureFixture) -> None:
    cmd = command.exiting(AWS_REFUSED, AWS_REFUSED, AWS_REFUSED, 0, AWS_REFUSED)
    assert FAILING == MONITOR_SCALE_FAILING == "monitor:scale:failing"
    a = scaler(r, cmd)
    first = a.act(OUT)
    assert first.acted and first.line == f"scale out FAILED: {REFUSED_LINE}"
    assert first.mail is not None
    subject, body = first.mail
    assert subject == f"[cdpipe] SCALE OUT FAILED: {REFUSED_LINE}"
    assert "AWS refused to create the instance (capacity or limits)" in body
    assert f"retried every {COOLDOWN:.0f} s" in body and OUT.reason in body
    assert json.loads(r.hget(FAILING, "out") or "")["failures"] == 1

    # Not retried at every poll: the breach goes on, the cooldown holds.
    assert [a.observe(RULE, 93.0, 1) for _ in range(10)] == [None] * 10
    assert command.calls() == 1
    cooldown_over(r)
    assert [a.observe(RULE, 93.0, 1) for _ in range(2)][-1] is not None  # retried now

    second = a.act(OUT)  # the retry fails too: no second mail, one log line
    assert second.acted and second.mail is None
    assert "scale out failed again (2 times since" in caplog.text

    restarted = scaler(r, cmd)  # a new monitor on the same Redis: no mail either
    cooldown_over(r)
    assert restarted.act(OUT).mail is None
    assert json.loads(r.hget(FAILING, "out") or "")["failures"] == 3

    cooldown_over(r)
    recovered = restarted.act(OUT)
    assert recovered.mail is not None
    assert recovered.mail[0] == "[cdpipe] SCALE OUT RECOVERED: scaled out: prod-4 " \
                                "(10.0.0.4:8000) serves abc123"
    assert "It had failed 3 time(s) since" in recovered.mail[1]
    assert r.hget(FAILING, "out") is None

    cooldown_over(r)  # a new streak is mailed again
    again = restarted.act(OUT).mail
    assert again is not None and again[0].startswith("[cdpipe] SCALE OUT FAILED: ")
    assert command.calls() == 5


def test_an_instance_that_never_became_healthy_is_mailed_as_terminated(
        r: redis.Redis, command: ScaleCommand) -> None:
    result = scaler(r, command.exiting(1)).act(OUT)
    assert result.mail is not None
    subject, body = result.mail
    assert subject == f"[cdpipe] SCALE OUT FAILED: {UNHEALTHY_LINE}"
    assert "terminated" in subject and "the scale command failed (exit 1)" in body


def test_a_long_failing_streak_is_reminded_after_the_repeat_interval(
        r: redis.Redis, command: ScaleCommand) -> None:
    a = scaler(r, command.exiting(AWS_REFUSED))
    assert a.act(OUT).mail is not None
    cooldown_over(r)
    assert a.act(OUT).mail is None
    streak = json.loads(r.hget(FAILING, "out") or "")
    r.hset(FAILING, "out", json.dumps(streak | {"mailed": time.time() - REMIND - 1}))
    cooldown_over(r)
    reminder = a.act(OUT).mail
    assert reminder is not None
    assert reminder[0] == f"[cdpipe] SCALE OUT STILL FAILING (3 times): {REFUSED_LINE}"
    cooldown_over(r)
    assert a.act(OUT).mail is None  # the next reminder is an interval later


def test_a_streak_that_does_not_read_counts_as_none(r: redis.Redis,
                                                    command: ScaleCommand) -> None:
    r.hset(FAILING, "out", "not json")
    assert scaler(r, command.exiting(AWS_REFUSED)).act(OUT).mail is not None


def test_the_monitor_queues_one_mail_for_a_failing_streak_across_a_restart(
        redis_server: tuple[int, str], r: redis.Redis, command: ScaleCommand) -> None:
    port, password = redis_server
    cmd = command.exiting(AWS_REFUSED, AWS_REFUSED, AWS_REFUSED, 0)

    def monitor() -> Monitor:
        return Monitor(MonitorConfig(
            interval_seconds=1, timeout_seconds=1, discover_roles=[],
            redis_url=f"redis://default:{password}@127.0.0.1:{port}/0",
            smtp=Smtp(port=free_port()), canary=CanaryJudge(enabled=False),
            scaling=Scaling(command=cmd, cooldown_seconds=COOLDOWN)))

    def subjects() -> list[str]:
        return [json.loads(m)["subject"] for m in r.lrange(OUTBOX, 0, -1)]

    mon = monitor()
    asyncio.run(mon.scale(OUT))
    asyncio.run(mon.scale(OUT))
    asyncio.run(monitor().scale(OUT))  # restarted
    assert subjects() == [f"[cdpipe] SCALE OUT FAILED: {REFUSED_LINE}"]
    asyncio.run(monitor().scale(OUT))
    assert subjects()[1:] == ["[cdpipe] SCALE OUT RECOVERED: scaled out: prod-4 "
                              "(10.0.0.4:8000) serves abc123"]
    assert command.calls() == 4
