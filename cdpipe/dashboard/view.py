"""What the page shows, by section, each read in one go from the environment's Redis
(as the operator), the state (instances, roles, deployed commits) and the monitor's
records. A keyspace notification names the sections it changes (``sections_of``), so a
flag flip re-reads the flags only."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import redis

from cdpipe import controls, records
from cdpipe.state import State
from cdpipe.status import lock_report
from cdpipe_host.keys import (
    CANARY_PREFIX,
    DEPLOY_HISTORY,
    ENV_LOCK,
    FLAG_PREFIX,
    MONITOR_ALERT_HISTORY,
    MONITOR_ALERTS,
    MONITOR_CANARY_VERDICT,
    MONITOR_SAMPLES,
    MONITOR_SCALE_EVENTS,
    SERVERS_PREFIX,
)

SECTIONS = ("instances", "flags", "canary", "alerts", "scale", "deploys", "lock")
HISTORY = 20  # entries of each history the page lists
# Not a section: a change that may have moved instances or commits (a server list, a
# deploy, a scale action), after which the state is read again (aws: DescribeInstances,
# so never on the monitor's every poll).
STATE = "state"
# The sections drawn from the state (instances, roles, deployed commits).
STATE_SECTIONS = frozenset({"instances", "canary"})


def sections_of(key: str) -> set[str]:
    """The sections a change of ``key`` touches (none for keys the page does not show,
    such as the monitor's outbox), and STATE when the state must be read again."""
    if key.startswith(FLAG_PREFIX):
        return {"flags"}
    if key.startswith(CANARY_PREFIX) or key == MONITOR_CANARY_VERDICT:
        return {"canary"}
    if key == MONITOR_SAMPLES:
        return {"instances"}
    if key.startswith(SERVERS_PREFIX):
        return {"instances", STATE}
    if key in (MONITOR_ALERTS, MONITOR_ALERT_HISTORY):
        return {"alerts"}
    if key == MONITOR_SCALE_EVENTS:
        return {"scale", "instances", STATE}
    if key == DEPLOY_HISTORY:
        return {"deploys", "instances", "canary", STATE}
    if key == ENV_LOCK:
        return {"lock"}
    return set()


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else value


def instances(r: redis.Redis, state: State) -> list[dict[str, Any]]:
    """Every instance of the state with its commit (the one deployed to its role), the
    monitor's recent CPU and memory samples and its health as the monitor's last poll
    saw it (None before the monitor polled it)."""
    samples = records.read_samples(r)
    rows = []
    for inst in state.instances:
        sample = samples.get(inst.id, {})
        polls = sample.get("t") or []
        rows.append({
            "id": inst.id, "role": inst.role, "address": inst.internal_address,
            "autoscaled": inst.autoscaled,
            "commit": state.deployed.get(inst.role),
            "healthy": sample.get("ok") if polls else None,
            "error": sample.get("error") or "",
            "t": polls,
            "cpu": [_finite(v) for v in sample.get("cpu") or []],
            "mem": [_finite(v) for v in sample.get("mem") or []],
        })
    return rows


def flags(r: redis.Redis) -> dict[str, str]:
    return controls.read_flags(r)


def canary(r: redis.Redis, state: State) -> dict[str, Any]:
    weight, alert = controls.read_canary(r)
    return {"weight": weight, "alert": alert, "verdict": records.read_verdict(r),
            "commit": state.deployed.get("canary"), "prod_commit": state.deployed.get("prod")}


def alerts(r: redis.Redis) -> dict[str, Any]:
    return {"active": records.read_alerts(r),
            "history": records.read_alert_history(r, HISTORY)}


def read(r: redis.Redis, state: State, wanted: Iterable[str]) -> dict[str, Any]:
    """The wanted sections, by name. RedisError goes up."""
    readers: dict[str, Callable[[], Any]] = {
        "instances": lambda: instances(r, state),
        "flags": lambda: flags(r),
        "canary": lambda: canary(r, state),
        "alerts": lambda: alerts(r),
        "scale": lambda: records.read_scale_events(r, HISTORY),
        "deploys": lambda: records.read_deploys(r, HISTORY),
        "lock": lambda: lock_report(r),
    }
    return {name: readers[name]() for name in wanted if name in readers}

