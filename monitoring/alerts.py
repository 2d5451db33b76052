"""Alert states, like Prometheus: inactive -> pending -> firing -> resolved.

An alert fires once its condition held for the rule's ``for`` polls in a row, and
resolves once it has been clear for ``keep_firing_for`` polls in a row (Prometheus'
name; by default as many as ``for``), so one noisy poll neither fires nor resolves it
and a flapping metric does not mail on every flap. A mail goes out when it fires, a
reminder only after the repeat interval, and one mail when it resolves. States live in
Redis (``monitor:alerts``), so a restarted monitor neither sends again nor forgets what
is firing. Each firing and resolved transition is also recorded, in the same
transaction, at the head of ``monitor:alerts:history`` (JSON: alert, event, at, since,
summary, value; the newest ``HISTORY_LENGTH`` kept).
"""

from __future__ import annotations

import logging
import math
import time
from typing import Literal

import redis

from cdpipe_host import history
from cdpipe_host.keys import MONITOR_ALERT_HISTORY, MONITOR_ALERTS
from cdpipe_host.names import OnceLog, shown
from cdpipe_host.values import text, texts
from monitoring.mailer import OUTBOX, message
from monitoring.records import AlertEvent, AlertState

ALERTS = MONITOR_ALERTS
HISTORY = MONITOR_ALERT_HISTORY
log = logging.getLogger("monitor.alerts")
INVALID = OnceLog(log)


def read_state(key: str, raw: str | None) -> AlertState | None:
    """A stored alert state; one that does not read as one is logged once and counts
    as none (the next verdict overwrites it)."""
    if raw is None:
        return None
    state = AlertState.loads(raw)
    if state is None:
        INVALID.warning((key, raw), f"invalid state {shown(raw)} of alert {shown(key)} in "
                        f"{ALERTS}; read as no state")
    return state


class AlertBook:
    def __init__(self, r: redis.Redis, repeat_interval: float) -> None:
        self.r = r
        self.repeat_interval = repeat_interval

    def load(self) -> dict[str, AlertState]:
        states = {k: read_state(k, v) for k, v in texts(self.r.hgetall(ALERTS)).items()}
        return {k: v for k, v in states.items() if v is not None}

    def observe(self, key: str, breached: bool, for_polls: int, summary: str,
                now: float | None = None, clear_polls: int = 1,
                value: float | None = None) -> str | None:
        """Records one poll's verdict; returns the transition: firing, reminder,
        resolved, or None. A firing alert resolves after ``clear_polls`` clear polls in
        a row; a pending one is forgotten at the first clear poll. ``value``: what the
        rule measured this poll (kept in the state, and in the history entry of a
        transition; None when the poll measured nothing)."""
        now = time.time() if now is None else now
        raw = self.r.hget(ALERTS, key)
        current = read_state(key, None if raw is None else str(raw))
        if not breached:
            if current is None:
                if raw is not None:  # a state that did not read: gone with its condition
                    self.r.hdel(ALERTS, key)
                return None
            if value is not None:
                current.value = _finite(value)
            if current.state == "firing" and current.clear + 1 < clear_polls:
                current.clear += 1
                self.r.hset(ALERTS, key, current.dumps())
                return None
            pipe = self.r.pipeline(transaction=True)
            pipe.hdel(ALERTS, key)
            transition = None
            if current.state == "firing":
                transition = "resolved"
                pipe.rpush(OUTBOX, message(f"[cdpipe] RESOLVED {key}",
                                           f"Resolved: {key}\nWas: {current.summary}\n"
                                           f"Firing since {time.ctime(current.since)}.\n"))
                history.push(pipe, HISTORY, _entry(key, "resolved", now, current))
            pipe.execute()
            return transition
        if current is None:
            current = AlertState(state="pending", count=0, since=now, last_sent=0.0,
                                 summary=summary)
        current.count += 1
        current.clear = 0
        current.summary = summary
        current.value = _finite(value)
        transition = None
        if current.state == "pending" and current.count >= for_polls:
            current.state, current.since, current.last_sent = "firing", now, now
            transition = "firing"
        elif current.state == "firing" and now < current.last_sent:
            # The wall clock stepped back: the reminder is due an interval from now, not
            # an interval plus the step.
            current.last_sent = now
        elif current.state == "firing" and now - current.last_sent >= self.repeat_interval:
            current.last_sent = now
            transition = "reminder"
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(ALERTS, key, current.dumps())
        if transition == "firing":
            pipe.rpush(OUTBOX, message(f"[cdpipe] FIRING {key}", f"Firing: {summary}\n"))
            history.push(pipe, HISTORY, _entry(key, "firing", now, current))
        elif transition == "reminder":
            pipe.rpush(OUTBOX, message(f"[cdpipe] STILL FIRING {key}",
                                       f"Still firing since {time.ctime(current.since)}: "
                                       f"{summary}\n"))
        pipe.execute()
        return transition

    def forget_missing(self, live_keys: set[str], prefix: str) -> None:
        """Alerts under ``prefix`` whose subject is gone (a removed instance) resolve
        at once."""
        for key in [str(text(k)) for k in self.r.hkeys(ALERTS)]:
            if key.startswith(prefix) and key not in live_keys:
                self.observe(key, False, 1, "")


def _entry(key: str, event: Literal["firing", "resolved"], now: float,
           state: AlertState) -> str:
    """A transition as ``monitor:alerts:history`` records it."""
    return AlertEvent(alert=key, event=event, at=now, since=state.since,
                      summary=state.summary, value=state.value).dumps()


def _finite(value: float | None) -> float | None:
    """A number JSON can hold (``json.dumps`` would write NaN or Infinity), else None."""
    return value if value is not None and math.isfinite(value) else None
