"""Automatic canary judgement: the canary's 5xx rate and p95 latency against prod's,
and against absolute ceilings.

Counters of each instance are turned into per-poll deltas (a counter that went back,
any of them, means the instance restarted: its counts since then are the delta; errors
are never negative nor more than the requests). The window is every poll since the
canary's release changed (``app_release_info{commit}``: a canary deploy starts a new
window, so no verdict mixes two releases) and within the last ``window_seconds``; it is
judged once both sides served ``min_requests``. Too little traffic is "no verdict yet",
and a prod beyond the ceilings is "inconclusive: prod unhealthy", never a pass. A
verdict names the commit it judged and when its window began.

p95 is interpolated within a histogram bucket as Prometheus' ``histogram_quantile``
does (the app's buckets are 25 ms apart up to 300 ms).
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field

from cdpipe_host.haproxy import ServerStats
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
        return quantile(0.95, self.buckets) * 1000


def quantile(q: float, buckets: dict[float, float]) -> float:
    """The q-quantile of a histogram (upper bound -> cumulative count), interpolated
    linearly within its bucket as Prometheus' histogram_quantile does: 0.0 without
    observations; the largest finite bound when it falls in the +Inf bucket."""
    bounds = sorted(buckets)
    total = buckets.get(math.inf, 0.0)
    if total <= 0 or len(bounds) < 2 or bounds[-1] != math.inf:
        return 0.0
    rank = q * total
    index = next(i for i, le in enumerate(bounds) if buckets[le] >= rank)
    if bounds[index] == math.inf:
        return bounds[-2]
    upper, count = bounds[index], buckets[bounds[index]]
    lower, below = (bounds[index - 1], buckets[bounds[index - 1]]) if index else (0.0, 0.0)
    if upper <= 0 or count - below <= 0:
        return upper
    return lower + (upper - lower) * (rank - below) / (count - below)


def _bound(raw: str) -> float | None:
    if raw == "+Inf":
        return math.inf
    try:
        return float(raw)
    except ValueError:
        return None


def release(sample: Sample) -> str:
    """The commit a target serves (its ``app_release_info``), "" when it does not say."""
    for name, labels, _value in sample.series:
        if name == "app_release_info":
            return labels.get("commit", "")
    return ""


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


def _went_back(now: Traffic, before: Traffic) -> bool:
    return (now.requests < before.requests or now.errors < before.errors
            or any(n < before.buckets.get(le, 0.0) for le, n in now.buckets.items()))


def delta(now: Traffic, before: Traffic | None) -> Traffic:
    """What an instance served since the poll before (nothing on the first poll): all it
    counted when any counter went back (it restarted), clamped so that errors are
    between 0 and the requests."""
    if before is None:
        return Traffic()
    if _went_back(now, before):
        d = Traffic(now.requests, now.errors, dict(now.buckets))
    else:
        d = Traffic(now.requests - before.requests, now.errors - before.errors,
                    {le: n - before.buckets.get(le, 0.0) for le, n in now.buckets.items()})
    d.errors = min(max(d.errors, 0.0), d.requests)
    return d


def side_of(traffic: Traffic) -> SideRecord:
    """One side's numbers over the judged window (p95 None when no request was timed)."""
    timed = traffic.buckets.get(math.inf, 0.0) > 0
    return SideRecord(requests=traffic.requests, error_rate=traffic.error_rate(),
                      p95_ms=traffic.p95_ms() if timed else None)


@dataclass
class Verdict:
    decided: bool
    failed: bool
    reason: str
    canary: SideRecord = field(default_factory=SideRecord)
    prod: SideRecord = field(default_factory=SideRecord)
    commit: str = ""  # the canary's release judged ("" when it did not say)
    window_start: float | None = None  # when the window began (epoch seconds)

    def record(self, at: float) -> VerdictRecord:
        """The verdict as ``monitor:canary:verdict`` holds it."""
        return VerdictRecord(at=at, decided=self.decided, failed=self.failed,
                             reason=self.reason,
                             canary=self.canary, prod=self.prod,
                             commit=self.commit, window_start=self.window_start)


@dataclass
class Poll:
    at: float
    traffic: dict[str, Traffic]


class Judge:
    def __init__(self, cfg: CanaryJudge) -> None:
        self.cfg = cfg
        self.last: dict[str, Traffic] = {}  # the app's counters by instance, last poll
        self.last_proxy: dict[str, Traffic] = {}  # HAProxy's, by server
        self.polls: deque[Poll] = deque()
        self.commit: str | None = None  # the canary's release this window judges
        self.window_start: float | None = None

    def observe(self, samples: list[Sample], now: float | None = None,
                proxy: dict[str, ServerStats] | None = None) -> Verdict:
        """One poll: the app's counters of each prod and canary instance and, when the
        monitor read them, HAProxy's (``proxy``: by server name, the instance id). Per
        instance the larger count of requests and of 5xx is taken: HAProxy's holds the
        502/503/504 it answered itself, the app's the requests that bypassed it."""
        now = time.time() if now is None else now
        ignore = set(self.cfg.ignore_routes)
        poll = Poll(now, {"prod": Traffic(), "canary": Traffic()})
        commits = set()
        for s in samples:
            if s.role not in poll.traffic or not s.ok:
                continue
            if s.role == "canary":
                commits.add(release(s))
            counted = totals(s, ignore)
            served = delta(counted, self.last.get(s.target_id))
            self.last[s.target_id] = counted
            if proxy is not None and (stats := proxy.get(s.target_id)) is not None:
                seen = Traffic(float(max(stats.selected, stats.responses)),
                               float(stats.failed))
                by_proxy = delta(seen, self.last_proxy.get(s.target_id))
                self.last_proxy[s.target_id] = seen
                served.requests = max(served.requests, by_proxy.requests)
                served.errors = min(max(served.errors, by_proxy.errors), served.requests)
            poll.traffic[s.role].add(served)
        commit = commits.pop() if len(commits) == 1 else ""
        if commit != self.commit:  # a new release (or none, or mixed): a new window
            self.commit = commit
            self.reset(now)
        self.polls.append(poll)
        while self.polls and self.polls[0].at < now - self.cfg.window_seconds:
            self.polls.popleft()
        return self.verdict()

    def reset(self, now: float | None = None) -> None:
        """A new window from now (after a release change, or a failed verdict)."""
        self.polls.clear()
        self.window_start = time.time() if now is None else now

    def verdict(self) -> Verdict:
        side = {"prod": Traffic(), "canary": Traffic()}
        for poll in self.polls:
            for role, traffic in poll.traffic.items():
                side[role].add(traffic)
        canary, prod = side["canary"], side["prod"]
        cfg = self.cfg
        numbers = side_of(canary), side_of(prod)

        def said(decided: bool, failed: bool, reason: str) -> Verdict:
            return Verdict(decided, failed, reason, *numbers, self.commit or "",
                           self.window_start)

        if canary.requests < cfg.min_requests or prod.requests < cfg.min_requests:
            return said(False, False,
                        f"no verdict yet: {canary.requests:.0f} canary and "
                        f"{prod.requests:.0f} prod requests (need {cfg.min_requests})")
        c_rate, p_rate = canary.error_rate(), prod.error_rate()
        c_p95, p_p95 = canary.p95_ms(), prod.p95_ms()
        if p_rate > cfg.max_error_rate or p_p95 > cfg.max_p95_ms:
            return said(False, False,
                        f"inconclusive: prod unhealthy (5xx {p_rate:.1%}, p95 "
                        f"{p_p95:.0f} ms; ceilings {cfg.max_error_rate:.0%}, "
                        f"{cfg.max_p95_ms:.0f} ms)")
        if c_rate > cfg.max_error_rate:
            return said(True, True,
                        f"canary 5xx rate {c_rate:.1%} above the ceiling "
                        f"{cfg.max_error_rate:.0%} over {canary.requests:.0f} canary "
                        "requests")
        if c_rate > p_rate + cfg.error_rate_margin:
            return said(True, True,
                        f"canary 5xx rate {c_rate:.1%} vs prod {p_rate:.1%} "
                        f"(margin {cfg.error_rate_margin:.0%}) over "
                        f"{canary.requests:.0f} canary requests")
        limit = min(max(p_p95 * cfg.latency_factor, p_p95 + cfg.latency_margin_ms),
                    cfg.max_p95_ms)
        if c_p95 > limit:
            return said(True, True, f"canary p95 {c_p95:.0f} ms vs prod {p_p95:.0f} ms "
                                    f"(limit {limit:.0f} ms)")
        return said(True, False, f"canary healthy: 5xx {c_rate:.1%} vs {p_rate:.1%}, "
                                 f"p95 {c_p95:.0f} vs {p_p95:.0f} ms")
