"""The SMTP server down for several polls while an alert fires and resolves, under a
steady load: both mails wait in the outbox and arrive once the server is back, each
once, in order."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.e2e.conftest import LocalEnv
from tests.e2e.load import failed
from tests.faults.conftest import (
    Outcome,
    alerts,
    mails_since_now,
    now,
    outbox,
    outcome,
    requests_after,
    steady_load,
)
from tests.faults.test_process_kills import monitor_polls
from tests.support import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.faults]


def test_smtp_down_for_several_polls(healthy: LocalEnv, record: list[Outcome]) -> None:
    env = healthy
    key = "instance-down/redis-1"
    fired, resolved = f"[cdpipe] FIRING {key}", f"[cdpipe] RESOLVED {key}"
    new = mails_since_now(env)

    def queued() -> list[str]:
        return [m["subject"] for m in outbox(env)]
    with steady_load(env) as load:
        env.supervisorctl("proxy-1", "stop", "mailsink")
        try:
            env.supervisorctl("redis-1", "stop", "agent")  # the alert fires...
            wait_until(lambda: alerts(env).get(key, {}).get("state") == "firing", 30,
                       "the alert firing", interval=0.1)
            env.supervisorctl("redis-1", "start", "agent")  # ... and resolves
            wait_until(lambda: queued() == [fired, resolved], 30,
                       lambda: f"both mails queued (now {queued()})", interval=0.1)
            polls = monitor_polls(env)
            # Several polls and failed deliveries with the server down.
            wait_until(lambda: monitor_polls(env) >= polls + 5 and any(
                m["attempts"] >= 2 for m in outbox(env)), 30,
                "5 polls and a second failed delivery", interval=0.2)
            assert new() == Counter()
        finally:
            back = now()
            env.supervisorctl("proxy-1", "start", "mailsink")
        wait_until(lambda: new()[fired] >= 1 and new()[resolved] >= 1, 60,
                   lambda: f"both mails delivered (outbox: {queued()})", interval=0.1)
        converged = now()
        wait_until(lambda: not outbox(env), 10, "the outbox empty")
        requests_after(load, converged)
        polls = monitor_polls(env)
        wait_until(lambda: monitor_polls(env) >= polls + 3, 15, "3 more polls")
    record.append(outcome("SMTP server down, alert fires and resolves", load, back,
                          converged))
    assert load.failures() == [], failed(load)
    assert new() == Counter({fired: 1, resolved: 1})
