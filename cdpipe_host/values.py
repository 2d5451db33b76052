"""How the values of the contract's keys read (docs/architecture.md, "How the values
read"): on/off words, the canary alert and weight, and Redis replies as text. Invalid
values are logged with their key (cut to a readable length, control characters escaped)
and read as the safe default, never a crash.
"""

from __future__ import annotations

import logging
import re

from cdpipe_host.keys import CANARY_ALERT, CANARY_WEIGHT
from cdpipe_host.names import shown

DEFAULT_CANARY_WEIGHT = 33
ON_WORDS = frozenset({"on", "true", "1", "yes"})
OFF_WORDS = frozenset({"off", "false", "0", "no"})

WEIGHT = re.compile(r"[0-9]{1,3}%?")  # ASCII digits only: str.isdigit() takes '²'

log = logging.getLogger(__name__)


def text(raw: bytes | str | None) -> str | None:
    """A Redis reply as text. Clients here decode responses; redis-py's types still
    say bytes or str, and a bytes reply is decoded as UTF-8."""
    return raw.decode() if isinstance(raw, bytes) else raw


def texts(raw: dict[bytes | str, bytes | str] | dict[str, str]) -> dict[str, str]:
    """A Redis hash reply (HGETALL) as text."""
    return {str(text(k)): str(text(v)) for k, v in raw.items()}


def read_switch(raw: str | None) -> bool | None:
    """An on/off word (any case, surrounding blanks ignored); None when it is neither."""
    value = (raw or "").strip().lower()
    if value in ON_WORDS:
        return True
    if value in OFF_WORDS:
        return False
    return None


def read_alert(raw: str | None) -> bool:
    """canary:alert: missing means off; invalid means on (the safe side)."""
    if raw is None:
        return False
    on = read_switch(raw)
    if on is None:
        log.warning("invalid value %s for %s; treating the canary alert as on",
                    shown(raw), CANARY_ALERT)
        return True
    return on


def valid_weight(raw: str) -> int | None:
    """An integer 0-100 (a trailing % allowed), else None."""
    value = raw.strip()
    if not WEIGHT.fullmatch(value):
        return None
    weight = int(value.rstrip("%"))
    return weight if weight <= 100 else None


def read_weight(raw: str | None) -> int:
    """canary:weight: an integer 0-100; missing or invalid means the default 33."""
    if raw is None:
        return DEFAULT_CANARY_WEIGHT
    weight = valid_weight(raw)
    if weight is None:
        log.warning("invalid value %s for %s; using %d", shown(raw), CANARY_WEIGHT,
                    DEFAULT_CANARY_WEIGHT)
        return DEFAULT_CANARY_WEIGHT
    return weight
