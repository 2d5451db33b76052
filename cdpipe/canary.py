"""Canary operations behind ``cdpipe canary``: its numbers next to prod's, and the
rules of promote (never a release under alert) and rollback."""

from __future__ import annotations

from typing import Any

from cdpipe import controls, status
from cdpipe.environment import Environment
from cdpipe.errors import CdpipeError
from cdpipe.model import APP_ROLES


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


def promote(env: Environment) -> None:
    """Deploys the canary's commit to every prod server, one at a time, each drained."""
    _, alert = controls.canary_settings(controls.client(env.settings, env.state))
    if alert:
        raise CdpipeError("the canary alert is on: its release failed judgement; "
                          "fix it or run `cdpipe canary rollback`")
    commit = env.state.deployed.get("canary")
    if not commit:
        raise CdpipeError("no canary release is known; run `cdpipe up` first")
    env.deploy(commit, "prod", command="canary promote")


def rollback(env: Environment) -> None:
    """Redeploys prod's commit to the canary."""
    commit = env.state.deployed.get("prod")
    if not commit:
        raise CdpipeError("no prod release is known; run `cdpipe up` first")
    env.deploy(commit, "canary", command="canary rollback")
