"""How a feature-flag value stored in Redis reads (the contract in docs/architecture.md,
"How the values read").

``on``/``off`` (also true/false, 1/0, yes/no, any case) or ``N%`` with 0 <= N <= 100.
``N%`` is on for a stable N% of users: bucket = SHA-256 of ``"<flag>:<user id>"``, first
8 bytes as an unsigned integer, modulo 10,000; on when bucket < N * 100. Including the
flag name makes buckets of different flags independent.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from cdpipe_host.values import read_switch

# ASCII only, and no exponent, underscore, sign or nan: float() alone takes '1_0', 'nan' and
# digits of other scripts.
PERCENT = re.compile(r"(?:[0-9]{1,3}(?:\.[0-9]{0,6})?|\.[0-9]{1,6})%")


class InvalidFlagValue(ValueError):
    """A value that is none of on/off/N%."""


@dataclass(frozen=True)
class FlagValue:
    """A parsed flag: the share of users (0.0-100.0 percent) for whom it is on."""

    percent: float

    def enabled_for(self, flag: str, user_id: str | None) -> bool:
        if self.percent >= 100:
            return True
        if self.percent <= 0:
            return False
        if user_id is None:
            return False
        return bucket(flag, user_id) < self.percent * 100


def bucket(flag: str, user_id: str) -> int:
    """The user's bucket for this flag, 0-9999."""
    digest = hashlib.sha256(f"{flag}:{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 10_000


def parse(raw: str) -> FlagValue:
    switch = read_switch(raw)
    if switch is not None:
        return FlagValue(100.0 if switch else 0.0)
    value = raw.strip()
    if PERCENT.fullmatch(value):
        percent = float(value[:-1])
        if percent <= 100:
            return FlagValue(percent)
    raise InvalidFlagValue(raw)
