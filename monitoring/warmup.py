"""A new instance's warm-up, as EC2 Auto Scaling has one: its first minutes (a cold
start, caches filling, an idle tier member) do not count in a scaling rule's average,
so they neither scale prod in at once nor hide the load the instance was added for.
The instances of the monitor's first poll are warm (a restarted monitor is no new
instance), and a role with no warm instance counts its warming ones (the environment's
first prod, registered after the monitor started, is all there is to go by)."""

from __future__ import annotations

import math

from monitoring.scrape import Sample


class Warmup:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.since: dict[str, float] = {}  # target id -> when it was first polled
        self.started = False

    def observe(self, samples: list[Sample], now: float) -> None:
        """One poll: targets seen for the first time start their warm-up (but at the
        first poll); those gone are forgotten (back later: a new instance again)."""
        polled = {s.target_id for s in samples}
        for gone in set(self.since) - polled:
            del self.since[gone]
        for target_id in polled - set(self.since):
            self.since[target_id] = now if self.started else -math.inf
        self.started = True

    def warm(self, target_id: str, now: float) -> bool:
        return now - self.since.get(target_id, -math.inf) >= self.seconds
