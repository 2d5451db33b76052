"""What the monitor and the control plane record for the dashboard, read back as plain
JSON-able values: the recent polls of each instance (``monitor:samples``), the alerts
firing and pending (``monitor:alerts``) and their history (``monitor:alerts:history``),
the scale events (``monitor:scale:events``), the deploys (``deploy:history``) and the
canary judge's latest verdict (``monitor:canary:verdict``). See ``cdpipe_host.keys``;
each record's shape is its model in ``monitoring.records``, the one its writer dumps.

Each reader takes a client with ``decode_responses=True`` (the operator's may read them
all). An entry that does not read as its model is skipped, never a crash; RedisError
goes up (the caller says Redis is down).
"""

from __future__ import annotations

import math
from typing import Any

import redis

from cdpipe_host.keys import (
    DEPLOY_HISTORY,
    MONITOR_ALERT_HISTORY,
    MONITOR_ALERTS,
    MONITOR_CANARY_VERDICT,
    MONITOR_SAMPLES,
    MONITOR_SCALE_EVENTS,
)
from cdpipe_host.values import text, texts
from monitoring.records import (
    AlertEvent,
    AlertState,
    DeployRecord,
    Record,
    SamplesRecord,
    ScaleEvent,
    VerdictRecord,
)

ALERT_STATES = ("firing", "pending")


def _list(r: redis.Redis, key: str, model: type[Record], count: int) -> list[dict[str, Any]]:
    """The newest ``count`` entries of a history list that read as ``model``."""
    if count <= 0:
        return []
    entries = (model.loads(str(text(raw))) for raw in r.lrange(key, 0, count - 1))
    return [entry.model_dump() for entry in entries if entry is not None]


def read_samples(r: redis.Redis) -> dict[str, dict[str, Any]]:
    """Instance id -> ``{"role", "ok", "error", "t", "cpu", "mem"}``: its last polls,
    oldest first (cpu, mem: percent, None where the poll failed)."""
    samples: dict[str, dict[str, Any]] = {}
    for instance_id, raw in sorted(texts(r.hgetall(MONITOR_SAMPLES)).items()):
        entry = SamplesRecord.loads(raw)
        if entry is not None:
            samples[instance_id] = entry.model_dump()
    return samples


def read_alerts(r: redis.Redis) -> list[dict[str, Any]]:
    """The alerts firing, then those pending, each oldest first:
    ``{"alert", "state", "since", "summary", "value"}``."""
    alerts = []
    for key, raw in texts(r.hgetall(MONITOR_ALERTS)).items():
        entry = AlertState.loads(raw)
        if entry is None:
            continue
        alerts.append({"alert": key, "state": entry.state, "since": entry.since,
                       "summary": entry.summary, "value": entry.value})
    return sorted(alerts, key=lambda a: (ALERT_STATES.index(a["state"]),
                                         a["since"] if math.isfinite(a["since"]) else math.inf,
                                         a["alert"]))


def read_alert_history(r: redis.Redis, count: int = 20) -> list[dict[str, Any]]:
    """The last ``count`` firing and resolved transitions, newest first
    (``AlertEvent``)."""
    return _list(r, MONITOR_ALERT_HISTORY, AlertEvent, count)


def read_scale_events(r: redis.Redis, count: int = 20) -> list[dict[str, Any]]:
    """The last ``count`` scale actions, newest first (``ScaleEvent``)."""
    return _list(r, MONITOR_SCALE_EVENTS, ScaleEvent, count)


def read_deploys(r: redis.Redis, count: int = 20) -> list[dict[str, Any]]:
    """The last ``count`` deploys, newest first (``DeployRecord``)."""
    return _list(r, DEPLOY_HISTORY, DeployRecord, count)


def verdict(r: redis.Redis) -> VerdictRecord | None:
    """The canary judge's latest verdict; None when the monitor recorded none (or it
    does not read)."""
    raw = r.get(MONITOR_CANARY_VERDICT)
    return VerdictRecord.loads(None if raw is None else str(text(raw)))


def read_verdict(r: redis.Redis) -> dict[str, Any] | None:
    """The latest verdict as JSON-able values (``VerdictRecord``: at, decided, failed,
    reason, canary and prod with requests, error_rate and p95_ms, commit, window_start,
    last_decided)."""
    entry = verdict(r)
    return None if entry is None else entry.model_dump()
