"""The Redis keys of the runtime contract (DESIGN.md) and how their values read.

Shared by the app, the proxy controller and the CLI. Standard library only: this file
is copied to the proxy host beside the controller.
"""

from __future__ import annotations

import logging

FLAG_PREFIX = "flag:"
CANARY_ALERT = "canary:alert"
CANARY_WEIGHT = "canary:weight"
SERVERS_PREFIX = "servers:"
DEFAULT_CANARY_WEIGHT = 33
ON_WORDS = frozenset({"on", "true", "1", "yes"})
OFF_WORDS = frozenset({"off", "false", "0", "no"})

log = logging.getLogger(__name__)


def text(raw: bytes | str | None) -> str | None:
    """A Redis reply as text. Clients here decode responses; redis-py's types still
    say bytes or str, and a bytes reply is decoded as UTF-8."""
    return raw.decode() if isinstance(raw, bytes) else raw


def texts(raw: dict[bytes | str, bytes | str] | dict[str, str]) -> dict[str, str]:
    """A Redis hash reply (HGETALL) as text."""
    return {str(text(k)): str(text(v)) for k, v in raw.items()}


def servers_key(role: str) -> str:
    return f"{SERVERS_PREFIX}{role}"


def read_alert(raw: str | None) -> bool:
    """canary:alert: missing means off; invalid means on (the safe side)."""
    if raw is None:
        return False
    value = raw.strip().lower()
    if value in ON_WORDS:
        return True
    if value in OFF_WORDS:
        return False
    log.warning("invalid value %r for %s; treating the canary alert as on", raw, CANARY_ALERT)
    return True


def read_weight(raw: str | None) -> int:
    """canary:weight: an integer 0-100; missing or invalid means the default 33."""
    if raw is None:
        return DEFAULT_CANARY_WEIGHT
    value = raw.strip().rstrip("%")
    if value.isdigit() and 0 <= int(value) <= 100:
        return int(value)
    log.warning("invalid value %r for %s; using %d", raw, CANARY_WEIGHT, DEFAULT_CANARY_WEIGHT)
    return DEFAULT_CANARY_WEIGHT


def haproxy_weights(canary_percent: int, prod_count: int, canary_count: int) -> tuple[int, int]:
    """(weight of each prod server, weight of each canary server) for HAProxy (0-256).

    The canary servers together get ``canary_percent`` of all requests, the prod
    servers share the rest equally, whatever their number. Weights are scaled so the
    larger of the two is 256, which keeps rounding error under 0.4%.
    """
    if canary_count == 0:
        return (1 if prod_count else 0), 0
    if prod_count == 0:
        return 0, 1
    prod_each = (100 - canary_percent) / prod_count
    canary_each = canary_percent / canary_count
    scale = 256 / max(prod_each, canary_each)
    return round(prod_each * scale), round(canary_each * scale)
