"""Scaling decisions for prod: out when the average stays above the rule's upper
threshold for its polls, in when it stays below its lower one; a cooldown after each
action (kept in Redis across restarts). The action itself is the ``cdpipe scale``
command, which provisions, deploys and registers (or drains and removes)."""

from __future__ import annotations

import logging
import subprocess
import time
from dataclasses import dataclass

import redis

from cdpipe_host.keys import MONITOR_SCALE_LAST
from monitoring.config import Rule, Scaling

log = logging.getLogger("monitor.scale")
LAST_ACTION = MONITOR_SCALE_LAST
NOTHING_TO_DO = 3  # exit code of `cdpipe scale` at its limits


@dataclass
class Decision:
    direction: str  # out | in
    reason: str


class Autoscaler:
    def __init__(self, cfg: Scaling, r: redis.Redis) -> None:
        self.cfg = cfg
        self.r = r
        self.above: dict[str, int] = {}
        self.below: dict[str, int] = {}
        # After "nothing to do" (at the maximum, or no autoscaled instance left), that
        # direction rests until the number of prod instances changes.
        self.idle: dict[str, int] = {}
        self.prod_count = 0
        # The last action when Redis could not record it (down or out of memory right
        # after a scale): the cooldown holds in this process all the same.
        self.last_local: float | None = None

    def cooling_down(self, now: float | None = None) -> float:
        """Seconds of cooldown left: never more than the cooldown itself, even when the
        wall clock stepped back since the last action (it is kept as wall time in Redis,
        which outlives this process and may be written from another machine)."""
        now = time.time() if now is None else now
        stamps: list[float] = []
        last = self.r.get(LAST_ACTION)
        try:
            if last:
                stamps.append(float(last))
        except ValueError:  # not a time: as if no action was recorded
            pass
        if self.last_local is not None:
            stamps.append(self.last_local)
        if not stamps:
            return 0.0
        return min(self.cfg.cooldown_seconds,
                   max(0.0, max(stamps) + self.cfg.cooldown_seconds - now))

    def observe(self, rule: Rule, average: float | None, prod_count: int = 0
                ) -> Decision | None:
        self.prod_count = prod_count
        if average is None:
            self.above[rule.name] = self.below[rule.name] = 0
            return None
        self.above[rule.name] = self.above.get(rule.name, 0) + 1 if average > rule.upper else 0
        low = rule.lower is not None and average < rule.lower
        self.below[rule.name] = self.below.get(rule.name, 0) + 1 if low else 0
        if self.cooling_down() > 0:
            return None
        if self.above[rule.name] >= rule.for_polls and self.idle.get("out") != prod_count:
            return Decision("out", f"prod {rule.metric} average {average:.1f} above "
                                   f"{rule.upper} for {self.above[rule.name]} polls")
        if self.below[rule.name] >= rule.for_polls and self.idle.get("in") != prod_count:
            return Decision("in", f"prod {rule.metric} average {average:.1f} below "
                                  f"{rule.lower} for {self.below[rule.name]} polls")
        return None

    def act(self, decision: Decision) -> tuple[bool, str]:
        """Runs the scale command; (acted, its last line of output)."""
        cmd = [*self.cfg.command, decision.direction, "--max", str(self.cfg.max_count)]
        log.info("scaling %s: %s", decision.direction, decision.reason)
        out = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=900)
        line = (out.stdout.strip().splitlines() or [""])[-1]
        if out.returncode == NOTHING_TO_DO:
            self.idle[decision.direction] = self.prod_count
            return False, line
        self.idle.clear()
        self.above.clear()
        self.below.clear()
        stamp, self.last_local = time.time(), None
        try:
            self.r.set(LAST_ACTION, str(stamp))
        except redis.RedisError as exc:
            self.last_local = stamp
            log.warning("scale %s done, but Redis did not record it (%s); the cooldown "
                        "holds in this process", decision.direction, exc)
        if out.returncode != 0:
            err = (out.stderr.strip().splitlines() or ["no output"])[-1]
            return True, f"scale {decision.direction} FAILED: {err}"
        return True, line
