"""Automatic canary judgement: the canary's 5xx rate and p95 latency against prod's.

Counters of each instance are turned into per-poll deltas; a window of recent polls is
judged once both sides served enough requests. Too little traffic is "no verdict yet",
never a pass.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import asdict, dataclass, field

from monitoring.config import CanaryJudge
from monitoring.records import SideRecord, VerdictRecord
from monitoring.scrape import Sample


@dataclass
class Traffic:
    requests: float = 0.0
    errors: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)  # le -> cumulative count

    def add(self, other: Traffic) -> None:
        self.requests += other.requests
        self.errors += other.errors
        for le, n in other.buckets.items():
            self.buckets[le] = self.buckets.get(le, 0.0) + n

    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def p95_ms(self) -> float:
        total = self.buckets.get(math.inf, 0.0)
        if total <= 0:
            return 0.0
        for le in sorted(self.buckets):
            if self.buckets[le] >= 0.95 * total:
                return le * 1000 if le != math.inf else math.inf
        return math.inf


def _bound(raw: str) -> float | None:
    if raw == "+Inf":
        return math.inf
    try:
        return float(raw)
    except ValueError:
        return None


def totals(sample: Sample, ignore: set[str]) -> Traffic:
    t = Traffic()
    for name, labels, value in sample.series:
        if labels.get("route") in ignore:
            continue
        if name == "app_requests_total":
            t.requests += value
            if labels.get("status", "").startswith("5"):
                t.errors += value
        elif name == "app_request_duration_seconds_bucket":
            le = _bound(labels.get("le", "+Inf"))
            if le is None:
                continue  # the canary's own /metrics: a bucket bound that is no number
            t.buckets[le] = t.buckets.get(le, 0.0) + value
    return t


def delta(now: Traffic, before: Traffic | None) -> Traffic:
    if before is None:
        return Traffic()
    if now.requests < before.requests:  # the instance restarted: counters began again
        return now
    d = Traffic(now.requests - before.requests, now.errors - before.errors)
    for le, n in now.buckets.items():
        d.buckets[le] = max(0.0, n - before.buckets.get(le, 0.0))
    return d


@dataclass
class Side:
    """One side's numbers over the judged window: requests, 5xx rate, p95 latency (None
    when no request was timed, or beyond the largest histogram bucket)."""

    requests: float = 0.0
    error_rate: float = 0.0
    p95_ms: float | None = None

    @classmethod
    def of(cls, traffic: Traffic) -> Side:
        p95 = traffic.p95_ms() if traffic.buckets.get(math.inf, 0.0) > 0 else None
        return cls(traffic.requests, traffic.error_rate(),
                   p95 if p95 is not None and math.isfinite(p95) else None)


@dataclass
class Verdict:
    decided: bool
    failed: bool
    reason: str
    canary: Side = field(default_factory=Side)
    prod: Side = field(default_factory=Side)

    def record(self, at: float) -> VerdictRecord:
        """The verdict as ``monitor:canary:verdict`` holds it."""
        return VerdictRecord(at=at, decided=self.decided, failed=self.failed,
                             reason=self.reason,
                             canary=SideRecord.model_validate(asdict(self.canary)),
                             prod=SideRecord.model_validate(asdict(self.prod)))


class Judge:
    def __init__(self, cfg: CanaryJudge) -> None:
        self.cfg = cfg
        self.last: dict[str, Traffic] = {}
        self.window: dict[str, deque[Traffic]] = {
            "prod": deque(maxlen=cfg.window_polls), "canary": deque(maxlen=cfg.window_polls)}

    def observe(self, samples: list[Sample]) -> Verdict:
        ignore = set(self.cfg.ignore_routes)
        poll = {"prod": Traffic(), "canary": Traffic()}
        for s in samples:
            if s.role not in poll or not s.ok:
                continue
            now = totals(s, ignore)
            poll[s.role].add(delta(now, self.last.get(s.target_id)))
            self.last[s.target_id] = now
        for role, traffic in poll.items():
            self.window[role].append(traffic)
        return self.verdict()

    def reset(self) -> None:
        for w in self.window.values():
            w.clear()

    def verdict(self) -> Verdict:
        side = {}
        for role, polls in self.window.items():
            t = Traffic()
            for p in polls:
                t.add(p)
            side[role] = t
        canary, prod = side["canary"], side["prod"]
        numbers = {"canary": Side.of(canary), "prod": Side.of(prod)}
        if canary.requests < self.cfg.min_requests or prod.requests < self.cfg.min_requests:
            return Verdict(False, False,
                           f"no verdict yet: {canary.requests:.0f} canary and "
                           f"{prod.requests:.0f} prod requests (need {self.cfg.min_requests})",
                           **numbers)
        c_rate, p_rate = canary.error_rate(), prod.error_rate()
        if c_rate > p_rate + self.cfg.error_rate_margin:
            return Verdict(True, True,
                           f"canary 5xx rate {c_rate:.1%} vs prod {p_rate:.1%} "
                           f"(margin {self.cfg.error_rate_margin:.0%}) over "
                           f"{canary.requests:.0f} canary requests", **numbers)
        c_p95, p_p95 = canary.p95_ms(), prod.p95_ms()
        limit = max(p_p95 * self.cfg.latency_factor, p_p95 + self.cfg.latency_margin_ms)
        if c_p95 > limit:
            return Verdict(True, True, f"canary p95 {c_p95:.0f} ms vs prod {p_p95:.0f} ms "
                                       f"(limit {limit:.0f} ms)", **numbers)
        return Verdict(True, False, f"canary healthy: 5xx {c_rate:.1%} vs {p_rate:.1%}, "
                                    f"p95 {c_p95:.0f} vs {p_p95:.0f} ms", **numbers)
