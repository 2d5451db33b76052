"""Canary operations behind ``cdpipe canary``: its numbers next to prod's, and the
rules of promote (a decided pass of the canary's own release, never under alert) and
rollback."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis

from cdpipe import controls, records, status
from cdpipe.environment import Environment
from cdpipe.errors import CdpipeError
from cdpipe.model import APP_ROLES
from cdpipe_host.names import one_line


def report(env: Environment) -> dict[str, Any]:
    """Weight, alert, and per app server: version, health, HAProxy status, requests and
    5xx responses."""
    weight, alert = controls.canary_settings(
        controls.client(env.settings, env.state))
    instances = status.collect(env.settings, env.state)["instances"]
    stats = controls.backend_stats(env.settings, env.state)
    servers = []
    for inst in instances:
        if inst["role"] not in APP_ROLES:
            continue
        row = dict(inst)
        if (s := stats.get(inst["id"])) is not None:
            row |= {"status": s.status, "weight": s.weight, "requests": s.responses,
                    "5xx": s.errors_5xx}
        servers.append(row)
    return {"weight": weight, "alert": alert, "servers": servers}


def promote(env: Environment, now: bool = False, show: Callable[[str], None] = print) -> None:
    """Deploys the canary's commit to every prod server, one at a time, each drained;
    only on the monitor judge's decided pass of that very commit (a verdict of the
    release before, or one not decided yet, is no pass) unless ``now`` (the emergency
    promote: said, and recorded as such); never under the canary alert."""
    r = controls.client(env.settings, env.state)
    _, alert = controls.canary_settings(r)
    if alert:
        raise CdpipeError("the canary alert is on: its release failed judgement; "
                          "fix it or run `cdpipe canary rollback`")
    commit = env.state.deployed.get("canary")
    if not commit:
        raise CdpipeError("no canary release is known; run `cdpipe up` first")
    if now:
        show(f"promoting {commit[:12]} now, without the judge's verdict (--now)")
    else:
        show(passing_verdict(r, commit))
    # The judge may fail the canary while prod changes: the next server is not drained.
    env.deploy(commit, "prod", command="canary promote --now" if now else "canary promote",
               stop_on_canary_alert=True)


def passing_verdict(r: redis.Redis, commit: str) -> str:
    """One line on the judge's decided pass of ``commit``; CdpipeError without one."""
    try:
        latest = records.verdict(r)
    except redis.RedisError as exc:
        raise CdpipeError(f"cannot read the judge's verdict from Redis: "
                          f"{one_line(str(exc), 200)}") from None
    decided = latest if latest is None or latest.decided else latest.last_decided
    wait = ("; wait for the monitor's verdict (`cdpipe canary status`), or promote "
            "without it: `cdpipe canary promote --now`")
    if decided is None:
        said = latest.reason if latest is not None else "no verdict recorded"
        raise CdpipeError(f"no decided verdict of the canary's release {commit[:12]} yet "
                          f"({one_line(said, 200)}){wait}")
    if decided.commit != commit:
        raise CdpipeError(f"the judge's last verdict is of "
                          f"{one_line(decided.commit or 'an unnamed release', 40)[:12]}"
                          f", not of the canary's release {commit[:12]}{wait}")
    if decided.failed:
        raise CdpipeError(f"the judge failed the canary's release {commit[:12]}: "
                          f"{one_line(decided.reason, 200)}")
    return (f"the judge passed {commit[:12]} over {decided.canary.requests:.0f} "
            f"canary requests: {one_line(decided.reason, 200)}")


def rollback(env: Environment) -> None:
    """Redeploys prod's commit to the canary."""
    commit = env.state.deployed.get("prod")
    if not commit:
        raise CdpipeError("no prod release is known; run `cdpipe up` first")
    env.deploy(commit, "canary", command="canary rollback")
