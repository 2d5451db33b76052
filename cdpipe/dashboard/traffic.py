"""Requests and 5xx responses per second, per server and per role, from two
successive readings of HAProxy's counters; and the canary's real share of requests
next to its weight."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cdpipe_host.haproxy import ServerStats


@dataclass
class Reading:
    at: float  # time.monotonic() of the reading
    servers: dict[str, ServerStats]


def _delta(now: int, before: int) -> int:
    """A counter's increase; HAProxy's counters start again at 0 when it reloads."""
    return now - before if now >= before else now


class TrafficMeter:
    """Keeps the last reading; ``add`` returns the rates since the one before."""

    def __init__(self) -> None:
        self.last: Reading | None = None

    def add(self, reading: Reading, roles: dict[str, str]) -> dict[str, Any]:
        """``roles``: server name (instance id) -> role. The result is the page's
        ``traffic`` section."""
        before, self.last = self.last, reading
        servers: list[dict[str, Any]] = []
        by_role: dict[str, dict[str, float]] = {}
        seconds = reading.at - before.at if before is not None else 0.0
        for name, s in sorted(reading.servers.items()):
            old = before.servers.get(name) if before is not None else None
            rps = err = 0.0
            if old is not None and seconds > 0:
                rps = _delta(s.responses, old.responses) / seconds
                err = _delta(s.errors_5xx, old.errors_5xx) / seconds
            role = roles.get(name, "?")
            servers.append({"id": name, "role": role, "status": s.status, "weight": s.weight,
                            "sessions": s.sessions, "rps": round(rps, 2),
                            "errors_5xx_per_s": round(err, 2), "requests": s.responses,
                            "errors_5xx": s.errors_5xx})
            total = by_role.setdefault(role, {"rps": 0.0, "errors_5xx_per_s": 0.0})
            total["rps"] += rps
            total["errors_5xx_per_s"] += err
        everything = sum(r["rps"] for r in by_role.values())
        canary = by_role.get("canary", {}).get("rps", 0.0)
        return {
            "seconds": round(seconds, 3),
            "servers": servers,
            "roles": {role: {k: round(v, 2) for k, v in totals.items()}
                      for role, totals in sorted(by_role.items())},
            "rps": round(everything, 2),
            # The share of the last interval's requests the canary answered; None
            # without traffic (no share to speak of).
            "canary_share": round(100 * canary / everything, 1) if everything > 0 else None,
        }
