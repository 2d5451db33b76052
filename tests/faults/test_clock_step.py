"""A step of the wall clock (NTP correcting a drifted clock, a VM resumed), without
changing this machine's clock: the monitor runs in this process against a real
redis-server and a real SMTP server, and ``time.time`` is replaced by a clock the test
steps (faketime-style injection; ``time.monotonic`` is the kernel's and does not step).

What the monitor keeps in wall time (alert times, a mail's next try, the scale
cooldown) lives in Redis, so it must also survive another machine's clock or a
restart after a step; its pacing (the poll interval, the scrape timeout), the proxy
controller's drain timer and resync, and the apps' flag resync use ``time.monotonic``
(read in their code, see the README's fault suite section).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from aiosmtpd.controller import Controller

from devkit import free_port
from monitoring.autoscaler import LAST_ACTION, Autoscaler
from monitoring.config import CanaryJudge, MonitorConfig, Scaling, Smtp, Target
from monitoring.mailsink import MaildirHandler
from monitoring.monitor import Monitor
from tests.support import maildir_subjects

HOUR = 3600.0
REAL_TIME = time.time


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Callable[[float], None]:
    """step(seconds): the wall clock of this process jumps by that much (negative: back)."""
    offset = [0.0]
    monkeypatch.setattr(time, "time", lambda: REAL_TIME() + offset[0])

    def step(seconds: float) -> None:
        offset[0] += seconds
    return step


@pytest.fixture
def smtp_port() -> int:
    return free_port()


@pytest.fixture
def maildir(tmp_path: Path) -> Path:
    return tmp_path / "Maildir"


@pytest.fixture
def smtp_server(smtp_port: int, maildir: Path) -> Iterator[Callable[[], None]]:
    """start(): a real SMTP server on ``smtp_port`` storing into ``maildir`` (down until
    then); stopped after the test."""
    started: list[Controller] = []

    def start() -> None:
        controller = Controller(MaildirHandler(maildir), hostname="127.0.0.1", port=smtp_port)
        controller.start()
        started.append(controller)
    yield start
    for c in started:
        c.stop()


def monitor(redis_server: tuple[int, str], smtp_port: int, target_port: int) -> Monitor:
    port, password = redis_server
    cfg = MonitorConfig(
        interval_seconds=1, timeout_seconds=1, down_after_polls=1, repeat_interval_seconds=HOUR,
        redis_url=f"redis://default:{password}@127.0.0.1:{port}/0",
        targets=[Target(id="web-1", role="prod", url=f"http://127.0.0.1:{target_port}/metrics")],
        discover_roles=[], smtp=Smtp(port=smtp_port, timeout_seconds=2),
        scaling=Scaling(command=["true"], cooldown_seconds=300),
        canary=CanaryJudge(enabled=False))
    return Monitor(cfg)


def cycle(mon: Monitor) -> None:
    """One poll of the monitor and its delivery round, as its loop runs them."""
    asyncio.run(mon.run(once=True))


def outbox(mon: Monitor) -> list[str]:
    return [json.loads(m)["subject"] for m in mon.r.lrange("monitor:outbox", 0, -1)]


def test_mail_delayed_by_a_dead_smtp_server_survives_a_clock_step_back(
        redis_server: tuple[int, str], smtp_port: int, maildir: Path,
        smtp_server: Callable[[], None], clock: Callable[[float], None]) -> None:
    dead = free_port()  # the instance: nothing listens there
    mon = monitor(redis_server, smtp_port, dead)
    cycle(mon)  # web-1 down: its alert fires; the SMTP server is down: the mail waits
    cycle(mon)
    assert outbox(mon) == ["[cdpipe] FIRING instance-down/web-1"]
    clock(-HOUR)  # the wall clock jumps an hour back
    smtp_server()
    # Its next try (a few seconds after the failed one, by the clock before the step)
    # now reads an hour away; more than the longest backoff away means the clock
    # stepped: the mail is due at once, not an hour late.
    cycle(mon)
    assert outbox(mon) == []
    assert maildir_subjects(maildir) == ["[cdpipe] FIRING instance-down/web-1"]


def test_alert_mails_once_across_clock_steps_both_ways(
        redis_server: tuple[int, str], smtp_port: int, maildir: Path,
        smtp_server: Callable[[], None], clock: Callable[[float], None]) -> None:
    smtp_server()
    mon = monitor(redis_server, smtp_port, free_port())
    cycle(mon)  # fires
    for step in (-HOUR, -HOUR, +HOUR / 2):  # back twice, then forward, under an hour net
        clock(step)
        cycle(mon)
        cycle(mon)
    # One firing mail; no reminder: the wall clock never showed an hour since it was sent
    # after it stepped back (a reminder is due an hour after the last mail *as the
    # clock reads after a backward step*, never sooner, never an hour late).
    assert maildir_subjects(maildir) == ["[cdpipe] FIRING instance-down/web-1"]
    clock(HOUR)  # an hour later than the last backward step's reading: one reminder
    cycle(mon)
    cycle(mon)
    assert maildir_subjects(maildir) == ["[cdpipe] FIRING instance-down/web-1",
                                         "[cdpipe] STILL FIRING instance-down/web-1"]


def test_scale_cooldown_never_exceeds_its_length_after_a_step_back(
        redis_server: tuple[int, str], clock: Callable[[float], None]) -> None:
    port, password = redis_server
    r = redis.Redis(port=port, password=password, decode_responses=True)
    scaler = Autoscaler(Scaling(command=["true"], cooldown_seconds=300), r)
    r.set(LAST_ACTION, str(time.time()))  # a scale action just now
    assert 299 < scaler.cooling_down() <= 300
    clock(-HOUR)  # without a bound the cooldown would last an hour and five minutes
    assert scaler.cooling_down() <= 300
    clock(+2 * HOUR)
    assert scaler.cooling_down() == 0
