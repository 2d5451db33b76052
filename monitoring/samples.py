"""The monitor's recent polls of each target, for the dashboard's sparklines: kept in
this process and written each cycle to ``monitor:samples`` (hash: target id -> JSON
``{"role", "ok", "error", "t": [...], "cpu": [...], "mem": [...]}``, the last
``KEEP`` polls oldest first; cpu and mem are the gauges the rules read, null when the
poll failed or lacked them). A target no longer polled leaves the hash. A (re)started
monitor first takes the history the hash holds, so sparklines survive a restart.

Redis errors here are logged and never stop the cycle: alerts and mail matter more.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass, field

import redis

from cdpipe_host.keys import MONITOR_SAMPLES
from cdpipe_host.names import one_line
from cdpipe_host.values import texts
from monitoring.config import METRIC_SERIES
from monitoring.records import SamplesRecord
from monitoring.scrape import Sample

KEEP = 30  # polls kept per target
CPU_SERIES = METRIC_SERIES["cpu_percent"]
MEM_SERIES = METRIC_SERIES["memory_percent"]
log = logging.getLogger("monitor.samples")

Point = tuple[float, float | None, float | None]  # (epoch seconds, cpu, mem)


@dataclass
class Target:
    role: str = ""
    ok: bool = False
    error: str = ""
    points: deque[Point] = field(default_factory=lambda: deque(maxlen=KEEP))

    def record(self) -> SamplesRecord:
        return SamplesRecord(role=self.role, ok=self.ok, error=self.error,
                             t=[p[0] for p in self.points], cpu=[p[1] for p in self.points],
                             mem=[p[2] for p in self.points])


def _number(value: object) -> float | None:
    """A finite number, else None (JSON has no NaN or infinity)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def read_target(raw: str) -> Target | None:
    """A stored entry as a Target; None when it does not read as one."""
    entry = SamplesRecord.loads(raw)
    if entry is None:
        return None
    target = Target(entry.role, entry.ok, entry.error)
    for when, cpu, mem in zip(entry.t, entry.cpu, entry.mem, strict=True):
        if when is not None:
            target.points.append((when, cpu, mem))
    return target


class SampleHistory:
    def __init__(self, r: redis.Redis, keep: int = KEEP) -> None:
        self.r = r
        self.keep = keep
        self.targets: dict[str, Target] = {}
        self.seeded = False
        self.stored: set[str] = set()  # fields the hash holds, as far as this process knows

    def add(self, samples: list[Sample], now: float) -> None:
        """One poll of every target, in this process."""
        polled = {s.target_id for s in samples}
        for gone in set(self.targets) - polled:
            del self.targets[gone]
        for s in samples:
            target = self.targets.setdefault(s.target_id, Target(points=deque(maxlen=self.keep)))
            target.role, target.ok = s.role, s.ok
            target.error = one_line(s.error, 300) if not s.ok else ""
            cpu = _number(s.gauges.get(CPU_SERIES)) if s.ok else None
            mem = _number(s.gauges.get(MEM_SERIES)) if s.ok else None
            target.points.append((round(now, 3), cpu, mem))

    def seed(self) -> None:
        """Takes the older polls the hash holds (a restarted monitor's history), before
        this process's own. RedisError goes up."""
        stored = texts(self.r.hgetall(MONITOR_SAMPLES))
        self.stored = set(stored)
        for target_id, raw in stored.items():
            old = read_target(raw)
            mine = self.targets.get(target_id)
            if old is None or mine is None:
                continue  # unreadable, or no longer polled (it leaves the hash)
            first = mine.points[0][0] if mine.points else math.inf
            merged = [p for p in old.points if p[0] < first] + list(mine.points)
            mine.points = deque(merged[-self.keep:], maxlen=self.keep)
        self.seeded = True

    def write(self) -> bool:
        """Writes every polled target, and removes those no longer polled, in one
        pipeline; whether it worked (a Redis error is logged, never raised)."""
        try:
            if not self.seeded:
                self.seed()
            pipe = self.r.pipeline(transaction=True)
            if self.targets:
                pipe.hset(MONITOR_SAMPLES, mapping={
                    k: t.record().dumps() for k, t in self.targets.items()})
            gone = sorted(self.stored - set(self.targets))
            if gone:
                pipe.hdel(MONITOR_SAMPLES, *gone)
            pipe.execute()
        except redis.RedisError as exc:
            log.warning("samples not recorded in %s (%s); next cycle", MONITOR_SAMPLES, exc)
            return False
        self.stored = set(self.targets)
        return True

    def record(self, samples: list[Sample], now: float) -> bool:
        self.add(samples, now)
        return self.write()
