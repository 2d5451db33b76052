"""The discovery service: ``servers:<role>`` (instance id -> host:port) in Redis, which
the proxy controller makes HAProxy follow. Registering a server puts it in rotation
(once it passes its health check); deregistering drains it. A deregistration that
would leave no server taking traffic is refused.
"""

from __future__ import annotations

import redis

from cdpipe_host.keys import CANARY_ALERT, servers_key
from cdpipe_host.names import address_problem, instance_id_problem, shown
from cdpipe_host.values import read_alert, text

APP_ROLES = ("prod", "canary")


class DrainRefused(Exception):
    """Draining this server would leave no server in rotation."""


class InvalidEntry(ValueError):
    """An instance id or address that every reader would skip: never written."""


def register(r: redis.Redis, role: str, instance_id: str, address: str) -> bool:
    """Puts the server in ``servers:<role>``; True when that changed anything.
    InvalidEntry (nothing written) for what the readers would skip."""
    problem = instance_id_problem(instance_id) or address_problem(address)
    if problem is not None:
        raise InvalidEntry(f"invalid entry {shown(instance_id)}={shown(address)} for "
                           f"{servers_key(role)}: {problem}")
    key = servers_key(role)
    if text(r.hget(key, instance_id)) == address:
        return False
    r.hset(key, instance_id, address)
    return True


def serving_after(counts: dict[str, int], canary_alert: bool, role: str) -> int:
    """How many servers still take traffic once one server of ``role`` leaves: the
    canary counts for nothing while its alert is on."""
    prod = counts.get("prod", 0) - (role == "prod")
    canary = 0 if canary_alert else counts.get("canary", 0) - (role == "canary")
    return prod + canary


class CanaryAlert(Exception):
    """The canary alert is on, and the drain was asked to stop then (a promote)."""


def deregister(r: redis.Redis, role: str, instance_id: str,
               unless_canary_alert: bool = False) -> bool:
    """Removes the server from ``servers:<role>`` (the controller then drains it); True
    when it was there. Raises DrainRefused rather than empty the backend, and
    CanaryAlert (nothing changed) when ``unless_canary_alert`` and the alert is on: a
    promote stops before its next server once the judge fails the canary."""
    key = servers_key(role)
    if unless_canary_alert and read_alert(text(r.get(CANARY_ALERT))):
        raise CanaryAlert(f"{CANARY_ALERT} is on: stopped before draining {instance_id} "
                          "(the canary failed judgement during the promote)")
    if r.hget(key, instance_id) is None:
        return False
    pipe = r.pipeline(transaction=False)
    for each in APP_ROLES:
        pipe.hlen(servers_key(each))
    pipe.get(CANARY_ALERT)
    *lengths, alert_raw = pipe.execute()
    alert = read_alert(text(alert_raw))
    counts = dict(zip(APP_ROLES, (int(n) for n in lengths), strict=True))
    if serving_after(counts, alert, role) < 1:
        raise DrainRefused(
            f"draining {instance_id} would leave no server in rotation "
            f"({CANARY_ALERT} is {'on' if alert else 'off'}); clear the alert or add a server")
    r.hdel(key, instance_id)
    return True
