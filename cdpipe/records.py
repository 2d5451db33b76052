"""What the monitor and the control plane record for the dashboard, read back as plain
JSON-able values: the recent polls of each instance (``monitor:samples``), the alerts
firing and pending (``monitor:alerts``) and their history (``monitor:alerts:history``),
the scale events (``monitor:scale:events``), the deploys (``deploy:history``) and the
canary judge's latest verdict (``monitor:canary:verdict``). See ``cdpipe_host.keys``.

Each reader takes a client with ``decode_responses=True`` (the operator's may read them
all). An entry that does not read as JSON of the right shape is skipped, never a crash;
RedisError goes up (the caller says Redis is down).
"""

from __future__ import annotations

import json
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

ALERT_STATES = ("firing", "pending")


def _object(raw: object) -> dict[str, Any] | None:
    """A JSON object (with JSON's own numbers: no NaN or infinity), else None."""
    try:
        value = json.loads(str(text(raw)) if isinstance(raw, bytes | str) else "",
                           parse_constant=_no_constant)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _no_constant(name: str) -> None:
    """NaN, Infinity and -Infinity read as null: the browser's JSON has no such numbers."""
    return None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _list(r: redis.Redis, key: str, count: int) -> list[dict[str, Any]]:
    """The newest ``count`` entries of a history list that read as objects."""
    if count <= 0:
        return []
    raw = r.lrange(key, 0, count - 1)
    return [entry for entry in map(_object, raw) if entry is not None]


def read_samples(r: redis.Redis) -> dict[str, dict[str, Any]]:
    """Instance id -> ``{"role", "ok", "error", "t", "cpu", "mem"}``: its last polls,
    oldest first (cpu, mem: percent, None where the poll failed)."""
    samples: dict[str, dict[str, Any]] = {}
    for instance_id, raw in sorted(texts(r.hgetall(MONITOR_SAMPLES)).items()):
        entry = _object(raw)
        if entry is None:
            continue
        times, cpu, mem = entry.get("t"), entry.get("cpu"), entry.get("mem")
        if not (isinstance(times, list) and isinstance(cpu, list) and isinstance(mem, list)
                and len(times) == len(cpu) == len(mem)):
            continue
        samples[instance_id] = {
            "role": str(entry.get("role", "")), "ok": entry.get("ok") is True,
            "error": str(entry.get("error", "")),
            "t": [_number(t) for t in times], "cpu": [_number(c) for c in cpu],
            "mem": [_number(m) for m in mem]}
    return samples


def read_alerts(r: redis.Redis) -> list[dict[str, Any]]:
    """The alerts firing, then those pending, each oldest first:
    ``{"alert", "state", "since", "summary", "value"}``."""
    alerts = []
    for key, raw in texts(r.hgetall(MONITOR_ALERTS)).items():
        entry = _object(raw)
        if entry is None or entry.get("state") not in ALERT_STATES:
            continue
        alerts.append({"alert": key, "state": entry["state"],
                       "since": _number(entry.get("since")),
                       "summary": str(entry.get("summary", "")),
                       "value": _number(entry.get("value"))})
    return sorted(alerts, key=lambda a: (ALERT_STATES.index(a["state"]),
                                         a["since"] if a["since"] is not None else math.inf,
                                         a["alert"]))


def read_alert_history(r: redis.Redis, count: int = 20) -> list[dict[str, Any]]:
    """The last ``count`` firing and resolved transitions, newest first:
    ``{"alert", "event", "at", "since", "summary", "value"}``."""
    return _list(r, MONITOR_ALERT_HISTORY, count)


def read_scale_events(r: redis.Redis, count: int = 20) -> list[dict[str, Any]]:
    """The last ``count`` scale actions, newest first:
    ``{"at", "direction", "ok", "line", "reason"}``."""
    return _list(r, MONITOR_SCALE_EVENTS, count)


def read_deploys(r: redis.Redis, count: int = 20) -> list[dict[str, Any]]:
    """The last ``count`` deploys, newest first: ``{"at", "finished", "commit", "ref",
    "target", "command", "result", "error", "by"}``."""
    return _list(r, DEPLOY_HISTORY, count)


def read_verdict(r: redis.Redis) -> dict[str, Any] | None:
    """The canary judge's latest verdict, ``{"at", "decided", "failed", "reason",
    "canary": {"requests", "error_rate", "p95_ms"}, "prod": {...}}``; None when the
    monitor recorded none (or it does not read)."""
    return _object(r.get(MONITOR_CANARY_VERDICT))
