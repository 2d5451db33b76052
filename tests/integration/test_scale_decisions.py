"""Scale decisions under stress, against real sockets and a real redis-server: a prod
instance whose /metrics does not answer in time reads as saturated (its worker is busy
to its limit), so the spike a scaling rule exists for still scales out; and a scale
command that overruns its bound is asked to stop (SIGTERM, which sudo relays to
cdpipe) before it is killed."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from monitoring import autoscaler
from monitoring.autoscaler import Autoscaler
from monitoring.config import Rule, Scaling
from monitoring.monitor import SATURATED, readings
from monitoring.scrape import poll

RULE = Rule.model_validate({"name": "prod-cpu", "metric": "cpu_percent", "role": "prod",
                            "upper": 40, "lower": 5, "for": 2, "scale": True})
MEMORY = Rule.model_validate({"name": "prod-mem", "metric": "memory_percent",
                              "role": "prod", "upper": 80})


@pytest.fixture
def silent() -> Iterator[int]:
    """A port whose server accepts (the kernel does) and never answers: a saturated
    single worker, as the monitor sees it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield int(sock.getsockname()[1])


def refused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again: connections are refused


def test_a_prod_tier_that_stops_answering_in_time_scales_out(
        r: redis.Redis, silent: int) -> None:
    targets = [("prod-1", "prod", f"http://127.0.0.1:{silent}/metrics"),
               ("prod-2", "prod", f"http://127.0.0.1:{refused_port()}/metrics")]
    scaler = Autoscaler(Scaling(command=["true"], cooldown_seconds=300), r)
    decisions = []
    for _ in range(RULE.for_polls):
        samples = asyncio.run(poll(targets, timeout=0.5))
        hung, dead = samples
        assert (hung.ok, hung.timed_out, dead.ok, dead.timed_out) == (False, True, False, False)
        values = readings(RULE, samples)
        assert values == {"prod-1": SATURATED}  # the refused one is instance-down's
        assert readings(MEMORY, samples) == {}  # no answer says nothing of memory
        decisions.append(scaler.observe(RULE, sum(values.values()) / len(values), 2))
    assert decisions[0] is None and decisions[-1] is not None
    assert decisions[-1].direction == "out"


# A scale command that overruns: it records the SIGTERM it gets (as cdpipe, reached
# through sudo, releases the environment lock on it) and would otherwise run on.
OVERRUN = """\
import signal, sys, time
def stop(signum, frame):
    open(sys.argv[1], "w").write("stopped")
    sys.exit(143)
signal.signal(signal.SIGTERM, stop)
print("scaling out", flush=True)
time.sleep(60)
"""


def test_a_scale_command_past_its_bound_is_asked_to_stop_before_it_is_killed(
        r: redis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(autoscaler, "COMMAND_TIMEOUT", 1.0)
    script, marker = tmp_path / "overrun.py", tmp_path / "stopped"
    script.write_text(OVERRUN, encoding="utf-8")
    scaler = Autoscaler(Scaling(command=[sys.executable, str(script), str(marker)],
                                cooldown_seconds=300), r)
    code, _last, err = scaler._run(scaler.cfg.command)
    assert code is None and "did not end within 1 s" in err
    assert marker.read_text() == "stopped"  # killed at once, it could not have said so


def test_a_new_instance_warms_up_before_it_counts_in_the_scaling_average(
        r: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    """prod-1 at 8% CPU (registered after the monitor started: warming, but the only
    prod, so it counts), then a new, idle prod-2 at 0%: counted at once, the average 4%
    is below the lower bound 5 and prod scales in two polls later, taking away the
    instance just added. Within its warm-up prod-2 is left out of the scaling average
    (not of the alerts'); after it, it counts."""
    from monitoring.config import MonitorConfig, Smtp
    from monitoring.monitor import Monitor
    from monitoring.scrape import Sample

    port = r.connection_pool.connection_kwargs["port"]
    password = r.connection_pool.connection_kwargs.get("password") or ""
    cfg = MonitorConfig(redis_url=f"redis://default:{password}@127.0.0.1:{port}/0",
                        rules=[RULE], smtp=Smtp(port=1),
                        scaling=Scaling(command=["true"], warmup_seconds=300),
                        canary={"enabled": False})
    monitor = Monitor(cfg)
    seen: list[tuple[float | None, str | None]] = []
    observe = monitor.scaler.observe

    def recorded(rule: Rule, average: float | None, prod_count: int) -> None:
        decision = observe(rule, average, prod_count)
        seen.append((average, decision.direction if decision else None))
        return None  # no scale action runs here
    monkeypatch.setattr(monitor.scaler, "observe", recorded)

    def cpu(target: str, value: float) -> Sample:
        return Sample(target, "prod", ok=True, gauges={"instance_cpu_percent": value})
    monitor.evaluate([], now=900.0)  # the monitor's first poll: no prod registered yet
    monitor.evaluate([cpu("prod-1", 8.0)], now=1000.0)  # warming, but the only one
    for at in (1300.0, 1390.0, 1480.0):  # prod-1 warm from 1300 on
        monitor.evaluate([cpu("prod-1", 8.0), cpu("prod-2", 0.0)], now=at)
    assert seen == [(None, None)] + [(8.0, None)] * 4  # prod-2 warming: never 4
    for at in (1600.0, 1690.0):  # past its warm-up (first polled at 1300)
        monitor.evaluate([cpu("prod-1", 8.0), cpu("prod-2", 0.0)], now=at)
    assert [average for average, _ in seen[5:]] == [4.0, 4.0]
    assert seen[-1][1] == "in"  # counted now, the tier is idle enough to scale in


def test_polls_while_the_environment_lock_is_held_do_not_count(
        r: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    """A deploy holds the environment lock (its drains skew the numbers): the two polls
    above upper taken meanwhile made a decision that then waited for the lock and acted
    on them stale. They count for nothing now; once the lock is free a new streak
    decides."""
    from cdpipe_host.keys import ENV_LOCK
    from monitoring.config import MonitorConfig, Smtp
    from monitoring.monitor import Monitor
    from monitoring.scrape import Sample

    kwargs = r.connection_pool.connection_kwargs
    cfg = MonitorConfig(
        redis_url=f"redis://default:{kwargs.get('password') or ''}@127.0.0.1:{kwargs['port']}/0",
        rules=[RULE], smtp=Smtp(port=1), scaling=Scaling(command=["true"]),
        canary={"enabled": False})
    monitor = Monitor(cfg)
    directions: list[str | None] = []
    observe = monitor.scaler.observe

    def recorded(rule: Rule, average: float | None, prod_count: int) -> None:
        decision = observe(rule, average, prod_count)
        directions.append(decision.direction if decision else None)
    monkeypatch.setattr(monitor.scaler, "observe", recorded)
    hot = [Sample("prod-1", "prod", ok=True, gauges={"instance_cpu_percent": 90.0})]
    r.set(ENV_LOCK, '{"owner": "deploy on laptop"}', px=60_000)
    for at in (1000.0, 1090.0, 1180.0):
        monitor.evaluate(hot, now=at)
    assert directions == [None, None, None]
    r.delete(ENV_LOCK)
    for at in (1270.0, 1360.0):
        monitor.evaluate(hot, now=at)
    assert directions[3:] == [None, "out"]
