"""The autoscaler's timing rules without servers: the cooldown after an action (kept in
Redis under monitor:scale:last, so a restarted monitor keeps it) and the rest of a
direction after `cdpipe scale` answered "nothing to do" (exit 3). Redis is a small
in-memory fake of the two calls the autoscaler makes (GET, SET); the scale command is a
real script run by subprocess, which records the arguments it was given."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
import redis

from cdpipe_host.keys import HISTORY_LENGTH, MONITOR_SCALE_EVENTS, MONITOR_SCALE_LAST
from monitoring.autoscaler import (
    EVENTS,
    LAST_ACTION,
    NOTHING_TO_DO,
    Autoscaler,
    Decision,
    Result,
)
from monitoring.config import Rule, Scaling

COOLDOWN = 300.0
RULE = Rule.model_validate({"name": "prod-cpu", "metric": "cpu_percent", "role": "prod",
                            "upper": 40, "lower": 5, "for": 2, "scale": True})
HIGH, LOW, CALM = 90.0, 1.0, 20.0

# `cdpipe scale DIRECTION --max N` stand-in: appends its arguments to the log file named
# first, prints a last line like the real command's, exits with the code named second.
SCALE_SCRIPT = """\
import json, sys
log, code, *args = sys.argv[1:]
with open(log, "a", encoding="utf-8") as fh:
    fh.write(json.dumps(args) + "\\n")
print("working")
print(f"scale {args[0]}: exit {code}")
if code != "0":
    print(f"cannot scale {args[0]}", file=sys.stderr)
sys.exit(int(code))
"""


class FakeRedis:
    """GET and SET of redis-py with decoded replies, over a dict; the lists of a
    pipeline's LPUSH and LTRIM (the scale events)."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        self.lists: dict[str, list[str]] = {}
        self.down = False  # True: every pipeline fails as Redis would when down

    def pipeline(self, transaction: bool = True) -> FakePipeline:
        return FakePipeline(self)

    def get(self, key: str) -> str | None:
        return self.data.get(key)

    def set(self, key: str, value: str) -> bool:
        self.data[key] = str(value)
        return True

    def hget(self, key: str, field: str) -> str | None:
        return self.data.get(f"{key}/{field}")

    def hset(self, key: str, field: str, value: str) -> int:
        self.data[f"{key}/{field}"] = value
        return 1

    def hdel(self, key: str, field: str) -> int:
        return 1 if self.data.pop(f"{key}/{field}", None) is not None else 0


class FakePipeline:
    def __init__(self, r: FakeRedis) -> None:
        self.r = r
        self.calls: list[tuple[str, str, tuple[object, ...]]] = []

    def lpush(self, key: str, value: str) -> None:
        self.calls.append(("lpush", key, (value,)))

    def ltrim(self, key: str, start: int, end: int) -> None:
        self.calls.append(("ltrim", key, (start, end)))

    def execute(self) -> list[object]:
        if self.r.down:
            raise redis.ConnectionError("Connection refused")
        for name, key, args in self.calls:
            items = self.r.lists.setdefault(key, [])
            if name == "lpush":
                items.insert(0, str(args[0]))
            else:
                start, end = int(str(args[0])), int(str(args[1]))
                self.r.lists[key] = items[start:end + 1]
        return []


class ScaleCommand:
    def __init__(self, tmp_path: Path) -> None:
        self.script = tmp_path / "fake_cdpipe_scale.py"
        self.script.write_text(SCALE_SCRIPT, encoding="utf-8")
        self.log = tmp_path / "scale-calls.jsonl"

    def exiting(self, code: int) -> list[str]:
        return [sys.executable, str(self.script), str(self.log), str(code)]

    def calls(self) -> list[list[str]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]


@pytest.fixture
def command(tmp_path: Path) -> ScaleCommand:
    return ScaleCommand(tmp_path)


def scaler(r: FakeRedis, cmd: list[str], max_count: int = 4) -> Autoscaler:
    cfg = Scaling(command=cmd, cooldown_seconds=COOLDOWN, max_count=max_count)
    return Autoscaler(cfg, r)  # type: ignore[arg-type]  # the fake has what it calls


def breach(a: Autoscaler, average: float, polls: int, prod_count: int = 1
           ) -> list[Decision | None]:
    return [a.observe(RULE, average, prod_count) for _ in range(polls)]


def test_the_cooldown_is_the_time_left_after_the_last_action_kept_in_redis() -> None:
    r = FakeRedis()
    a = scaler(r, ["true"])
    assert LAST_ACTION == MONITOR_SCALE_LAST == "monitor:scale:last"
    assert a.cooling_down() == 0.0  # never acted
    r.set(LAST_ACTION, "1000.0")
    assert a.cooling_down(now=1000.0) == COOLDOWN
    assert a.cooling_down(now=1100.0) == COOLDOWN - 100
    assert a.cooling_down(now=1000.0 + COOLDOWN) == 0.0
    assert a.cooling_down(now=5000.0) == 0.0  # never negative


def test_a_breach_for_the_rules_polls_decides_out_then_in() -> None:
    a = scaler(FakeRedis(), ["true"])
    assert breach(a, HIGH, 1) == [None]  # one poll of two
    decision = a.observe(RULE, HIGH, 1)
    assert decision is not None and decision.direction == "out"
    assert "above 40.0 for 2 polls" in decision.reason
    a = scaler(FakeRedis(), ["true"])
    assert breach(a, CALM, 3) == [None] * 3  # between lower and upper: nothing
    assert a.observe(RULE, None, 1) is None  # no data resets the streak
    assert breach(a, LOW, 1) == [None]
    decision = a.observe(RULE, LOW, 1)
    assert decision is not None and decision.direction == "in"
    assert "below 5.0 for 2 polls" in decision.reason


def test_no_decision_while_cooling_down_after_an_action(command: ScaleCommand) -> None:
    r = FakeRedis()
    a = scaler(r, command.exiting(0))
    decision = breach(a, HIGH, 2)[-1]
    assert decision is not None
    before = time.time()
    assert a.act(decision) == Result(True, "scale out: exit 0", (
        "[cdpipe] SCALE OUT: scale out: exit 0", f"scale out: exit 0\nWhy: {decision.reason}\n"))
    assert command.calls() == [["out", "--max", "4"]]
    assert before <= float(r.data[LAST_ACTION]) <= time.time()
    assert COOLDOWN - 5 < a.cooling_down() <= COOLDOWN

    # The breach goes on for many more polls: nothing is decided during the cooldown.
    assert breach(a, HIGH, 10, prod_count=2) == [None] * 10
    # A monitor restarted mid-cooldown (a new autoscaler on the same Redis) waits too.
    restarted = scaler(r, command.exiting(0))
    assert breach(restarted, HIGH, 5, prod_count=2) == [None] * 5

    # Cooldown over (the stored time moved back): the ongoing breach decides at once.
    r.set(LAST_ACTION, str(time.time() - COOLDOWN - 1))
    assert a.cooling_down() == 0.0
    decision = a.observe(RULE, HIGH, 2)
    assert decision is not None and decision.direction == "out"
    assert len(command.calls()) == 1  # observe never runs the command


def test_a_failed_scale_command_also_starts_the_cooldown(command: ScaleCommand) -> None:
    r = FakeRedis()
    a = scaler(r, command.exiting(1))
    decision = breach(a, HIGH, 2)[-1]
    assert decision is not None
    result = a.act(decision)
    assert (result.acted, result.line) == (True, "scale out FAILED: cannot scale out")
    assert LAST_ACTION in r.data and a.cooling_down() > 0
    assert breach(a, HIGH, 3) == [None] * 3


def test_nothing_to_do_rests_that_direction_until_the_prod_count_changes(
        command: ScaleCommand) -> None:
    r = FakeRedis()
    a = scaler(r, command.exiting(NOTHING_TO_DO), max_count=4)
    decision = breach(a, HIGH, 2, prod_count=4)[-1]
    assert decision is not None and decision.direction == "out"
    assert a.act(decision) == Result(False, "scale out: exit 3")
    assert command.calls() == [["out", "--max", "4"]]
    # "Nothing to do" is not an action: no cooldown starts ...
    assert LAST_ACTION not in r.data and a.cooling_down() == 0.0
    # ... but "out" is not proposed again while prod still has 4 instances.
    assert breach(a, HIGH, 10, prod_count=4) == [None] * 10
    # The other direction is not resting.
    decision = breach(a, LOW, 2, prod_count=4)[-1]
    assert decision is not None and decision.direction == "in"
    # Once the count changes (an operator removed one), "out" is proposed again.
    decision = breach(a, HIGH, 2, prod_count=3)[-1]
    assert decision is not None and decision.direction == "out"


def test_nothing_to_do_in_rests_until_prod_grows(command: ScaleCommand) -> None:
    a = scaler(FakeRedis(), command.exiting(NOTHING_TO_DO))
    decision = breach(a, LOW, 2, prod_count=1)[-1]
    assert decision is not None and decision.direction == "in"
    assert a.act(decision) == Result(False, "scale in: exit 3")
    assert breach(a, LOW, 10, prod_count=1) == [None] * 10
    decision = breach(a, LOW, 1, prod_count=2)[-1]
    assert decision is not None and decision.direction == "in"


def test_an_action_ends_every_rest(command: ScaleCommand) -> None:
    r = FakeRedis()
    a = scaler(r, command.exiting(NOTHING_TO_DO))
    resting = breach(a, LOW, 2, prod_count=2)[-1]
    assert resting is not None and a.act(resting) == Result(False, "scale in: exit 3")
    assert breach(a, LOW, 3, prod_count=2) == [None] * 3  # "in" rests
    a.cfg.command = command.exiting(0)
    out = breach(a, HIGH, 2, prod_count=2)[-1]
    assert out is not None and a.act(out).acted
    r.set(LAST_ACTION, str(time.time() - COOLDOWN - 1))  # cooldown over
    # Same prod count as when "in" had nothing to do, yet the rest was cleared.
    decision = breach(a, LOW, 2, prod_count=2)[-1]
    assert decision is not None and decision.direction == "in"


def events(r: FakeRedis) -> list[dict[str, object]]:
    return [json.loads(e) for e in r.lists.get(MONITOR_SCALE_EVENTS, [])]


def test_every_action_that_ran_is_a_scale_event_newest_first(command: ScaleCommand) -> None:
    assert EVENTS == MONITOR_SCALE_EVENTS == "monitor:scale:events"
    r = FakeRedis()
    a = scaler(r, command.exiting(0))
    out = breach(a, HIGH, 2)[-1]
    assert out is not None
    before = time.time()
    a.act(out)
    [done] = events(r)
    assert before <= float(str(done.pop("at"))) <= time.time()
    assert done == {"direction": "out", "ok": True, "line": "scale out: exit 0",
                    "reason": out.reason}
    a.cfg.command = command.exiting(1)
    a.act(Decision("in", "prod cpu_percent average 1.0 below 5.0 for 2 polls"))
    failed, first = events(r)
    assert (failed["direction"], failed["ok"], failed["line"]) == (
        "in", False, "scale in FAILED: cannot scale in")
    assert first["direction"] == "out"
    # "Nothing to do" did not act: no event.
    a.cfg.command = command.exiting(NOTHING_TO_DO)
    a.act(Decision("out", "x"))
    assert len(events(r)) == 2
    # The newest HISTORY_LENGTH are kept.
    a.cfg.command = command.exiting(0)
    for _ in range(HISTORY_LENGTH):
        a.act(Decision("out", "again"))
    assert len(events(r)) == HISTORY_LENGTH
    assert {e["reason"] for e in events(r)} == {"again"}


def test_a_scale_event_redis_refuses_is_logged_not_raised(
        command: ScaleCommand, caplog: pytest.LogCaptureFixture) -> None:
    r = FakeRedis()
    r.down = True
    a = scaler(r, command.exiting(0))
    result = a.act(Decision("out", "hot"))
    assert result.acted and result.line == "scale out: exit 0"
    assert "not recorded in monitor:scale:events" in caplog.text
