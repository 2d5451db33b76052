"""A scale action that ends while Redis refuses writes (out of memory, as when it is
down): the action is neither repeated at the next poll (its cooldown holds in the
monitor) nor left unmailed (its mail is queued once Redis takes writes again, once).
Against a real redis-server; the scale command is a real process that makes Redis run
out of memory while the scale runs."""

from __future__ import annotations

import asyncio
import json

import pytest
import redis

from devkit import free_port
from monitoring.autoscaler import LAST_ACTION, Decision
from monitoring.config import CanaryJudge, MonitorConfig, Scaling, Smtp
from monitoring.mailer import OUTBOX
from monitoring.monitor import Monitor

SCALE_MAIL = "[cdpipe] SCALE OUT: scaled out: prod-9"


def test_scale_ending_while_redis_refuses_writes(redis_server: tuple[int, str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    port, password = redis_server
    monkeypatch.setenv("REDISCLI_AUTH", password)  # for the scale command's redis-cli
    # What a scale-out prints last; meanwhile Redis runs out of memory.
    command = ["sh", "-c", f"redis-cli -p {port} CONFIG SET maxmemory 1 >/dev/null; "
                           "echo 'scaled out: prod-9'", "scale"]
    mon = Monitor(MonitorConfig(
        interval_seconds=1, timeout_seconds=1, redis_url=f"redis://default:{password}"
        f"@127.0.0.1:{port}/0", discover_roles=[], smtp=Smtp(port=free_port()),
        scaling=Scaling(command=command, cooldown_seconds=300),
        canary=CanaryJudge(enabled=False)))
    r = redis.Redis(port=port, password=password, decode_responses=True)

    asyncio.run(mon.scale(Decision("out", "prod cpu_percent average 90 above 40")))
    try:
        assert r.config_get("maxmemory")["maxmemory"] == "1"  # the command ran
        assert r.get(LAST_ACTION) is None and r.llen(OUTBOX) == 0  # Redis refused both
        assert mon.scaler.cooling_down() > 290  # no second scale-out at the next poll
        asyncio.run(mon.run(once=True))  # a cycle while Redis still refuses writes
        assert r.llen(OUTBOX) == 0
    finally:
        r.config_set("maxmemory", "0")
    asyncio.run(mon.run(once=True))
    asyncio.run(mon.run(once=True))
    queued = [json.loads(m)["subject"] for m in r.lrange(OUTBOX, 0, -1)]
    assert queued == [SCALE_MAIL]  # the SMTP server is down: it waits there, once
    assert mon.unqueued == []
