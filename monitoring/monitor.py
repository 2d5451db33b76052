"""The monitor daemon: polls every instance, alerts by email, scales prod, judges the
canary. Usage: ``python -m monitoring.monitor CONFIG.yml [--rules RULES.yml]
[--interval SECONDS] [--once]``.

Each cycle polls all targets at once (static ones from the configuration, app servers
discovered in ``servers:<role>``), records the polls (``monitor:samples``, see
``monitoring.samples``), then evaluates the rules, the built-in ``instance-down`` alert
of every target, the canary judgement (its latest verdict in ``monitor:canary:verdict``)
and the autoscaler, then delivers queued mail. A scale action runs in the background:
polling goes on.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import time
from statistics import mean

import redis

from cdpipe_host.haproxy import ServerStats
from cdpipe_host.keys import CANARY_ALERT, ENV_LOCK, MONITOR_CANARY_VERDICT, servers_key
from cdpipe_host.names import DECODE_ERRORS, OnceLog, server_entries
from cdpipe_host.values import read_alert, text, texts
from monitoring import config as config_mod
from monitoring import proxy_stats
from monitoring.alerts import AlertBook
from monitoring.autoscaler import Autoscaler, Decision
from monitoring.canary_judge import Judge, Verdict
from monitoring.config import METRIC_SERIES, MonitorConfig, Rule
from monitoring.mailer import OUTBOX, deliver_due, message
from monitoring.records import VerdictRecord
from monitoring.samples import SampleHistory
from monitoring.scrape import Sample, poll
from monitoring.warmup import Warmup

log = logging.getLogger("monitor")


SATURATED = 100.0  # the CPU a rule reads for an instance whose /metrics timed out


def readings(rule: Rule, samples: list[Sample]) -> dict[str, float]:
    """Each instance of the rule's role and its value of the rule's metric this poll. An
    instance whose /metrics timed out reads as a saturated CPU: a worker busy to its
    limit cannot answer either, and leaving it out of the average would leave out the
    very spike a scaling rule is for (every prod instance timing out would leave no
    average at all). One that refused or failed otherwise is left out (instance-down
    covers it)."""
    series = METRIC_SERIES[rule.metric]
    values = {s.target_id: s.gauges[series] for s in samples
              if s.ok and s.role == rule.role and series in s.gauges}
    if rule.metric == "cpu_percent":
        values |= {s.target_id: SATURATED for s in samples
                   if s.timed_out and s.role == rule.role}
    return values


class Monitor:
    def __init__(self, cfg: MonitorConfig) -> None:
        self.cfg = cfg
        self.r = redis.Redis.from_url(cfg.redis_url, decode_responses=True, socket_timeout=5,
                                      socket_connect_timeout=5,
                                      encoding_errors=DECODE_ERRORS)
        self.alerts = AlertBook(self.r, cfg.repeat_interval_seconds)
        self.scaler = Autoscaler(cfg.scaling, self.r, cfg.repeat_interval_seconds)
        self.judge = Judge(cfg.canary)
        self.proxy: dict[str, ServerStats] | None = None  # HAProxy's counts, last poll
        self.history = SampleHistory(self.r)
        self.warmup = Warmup(cfg.scaling.warmup_seconds)
        self.scaling: asyncio.Task[None] | None = None
        # Mail that could not be queued in Redis (down or out of memory when a scale
        # action ended): queued at the next cycles, in order.
        self.unqueued: list[str] = []
        self.cycles = 0
        self.skipped = OnceLog(log)  # invalid server entries, each logged once
        self.last_decided: VerdictRecord | None = None  # the judge's last decided verdict

    def targets(self) -> list[tuple[str, str, str]]:
        found = {t.id: (t.id, t.role, t.url) for t in self.cfg.targets}
        for role in self.cfg.discover_roles:
            key = servers_key(role)
            entries = server_entries(key, texts(self.r.hgetall(key)), self.skipped)
            for instance_id, address in entries.items():
                found[instance_id] = (instance_id, role, f"http://{address}/metrics")
        return list(found.values())

    async def cycle(self) -> list[Sample]:
        targets = self.targets()
        started, at = time.monotonic(), time.time()
        samples, self.proxy = await asyncio.gather(
            poll(targets, self.cfg.timeout_seconds), self.read_proxy())
        self.cycles += 1
        log.info("poll %d: %d targets in %.2fs, %d down", self.cycles, len(samples),
                 time.monotonic() - started, sum(not s.ok for s in samples))
        self.history.record(samples, at)
        self.evaluate(samples, at)
        return samples

    async def read_proxy(self) -> dict[str, ServerStats] | None:
        """HAProxy's count of each app server's answers, for the canary judge (None
        without the stats page in the configuration, or when it did not answer)."""
        if self.cfg.proxy_stats is None or not self.cfg.canary.enabled:
            return None
        return await proxy_stats.read(self.cfg.proxy_stats, self.cfg.timeout_seconds)

    def evaluate(self, samples: list[Sample], now: float | None = None) -> None:
        now = time.time() if now is None else now
        self.warmup.observe(samples, now)
        live = set()
        for s in samples:
            key = f"instance-down/{s.target_id}"
            live.add(key)
            self.alerts.observe(key, not s.ok, self.cfg.down_after_polls,
                                f"{s.target_id} ({s.role}) does not answer /metrics: {s.error}",
                                clear_polls=self.cfg.down_after_polls)
        self.alerts.forget_missing(live, "instance-down/")
        locked = self.environment_locked()
        for rule in self.cfg.rules:
            values = readings(rule, samples)
            log.info("rule %s (%s %s, upper %s): %s", rule.name, rule.role, rule.metric,
                     rule.upper, " ".join(f"{t}={v:.1f}" for t, v in list(values.items())[:8])
                     + (" ..." if len(values) > 8 else ""))
            if rule.aggregate == "each":
                for target_id, value in values.items():
                    self.alerts.observe(
                        f"{rule.name}/{target_id}", value > rule.upper, rule.for_polls,
                        f"{target_id} {rule.metric} {value:.1f} > {rule.upper}",
                        clear_polls=rule.clear_polls, value=value)
                continue
            # No sample of the role this poll: no verdict (instance-down covers it).
            average = mean(values.values()) if values else None
            if average is not None:
                self.alerts.observe(
                    rule.name, average > rule.upper, rule.for_polls,
                    f"{rule.role} {rule.metric} average {average:.1f} > {rule.upper} "
                    f"over {len(values)} instance(s)", clear_polls=rule.clear_polls,
                    value=average)
            if rule.scale:
                prod_count = sum(1 for s in samples if s.role == "prod")
                # Warming instances count only when no warm one is there to count (the
                # environment's first prod, polled after the monitor started).
                warm = [v for t, v in values.items() if self.warmup.warm(t, now)] or list(
                    values.values())
                # A poll while a deploy (or any action) holds the environment lock does
                # not count: its numbers are the deploy's, and a decision made on them
                # would wait for the lock and act on them stale.
                counted = mean(warm) if warm and not locked else None
                decision = self.scaler.observe(rule, counted, prod_count)
                if decision and (self.scaling is None or self.scaling.done()):
                    self.scaling = asyncio.get_running_loop().create_task(
                        self.scale(decision))
        if self.cfg.canary.enabled:
            self.judge_canary(samples)

    def environment_locked(self) -> bool:
        """Whether a deploy, an up or a scale action holds the environment lock now
        (cdpipe.env_lock); False when Redis does not say (the scale guards cover it)."""
        if not any(rule.scale for rule in self.cfg.rules):
            return False
        try:
            return self.r.exists(ENV_LOCK) > 0
        except redis.RedisError as exc:
            log.warning("environment lock not read (%s); polls counted", exc)
            return False

    def judge_canary(self, samples: list[Sample]) -> None:
        verdict = self.judge.observe(samples, proxy=self.proxy)
        self.record_verdict(verdict)
        if not verdict.decided:
            log.debug("canary: %s", verdict.reason)
            return
        if verdict.failed and not read_alert(text(self.r.get(CANARY_ALERT))):
            pipe = self.r.pipeline(transaction=True)
            pipe.set(CANARY_ALERT, "on")
            pipe.rpush(OUTBOX, message("[cdpipe] CANARY ALERT: canary taken out of traffic",
                                       f"The monitor set canary:alert on: {verdict.reason}.\n"
                                       "Investigate, then `cdpipe canary rollback` or "
                                       "`cdpipe canary clear`.\n"))
            pipe.execute()
            self.judge.reset()
            log.warning("canary alert raised: %s", verdict.reason)

    def record_verdict(self, verdict: Verdict) -> None:
        """The latest verdict, for the dashboard, with the last decided one under
        ``last_decided`` (after a failed verdict the judge starts a new window, whose
        "no verdict yet" must not hide why the canary was taken out); a Redis error is
        logged, never raised."""
        record = verdict.record(time.time())
        if verdict.decided:
            self.last_decided = record
        stored = record.model_copy(update={"last_decided": self.last_decided})
        try:
            self.r.set(MONITOR_CANARY_VERDICT, stored.dumps())
        except redis.RedisError as exc:
            log.warning("canary verdict not recorded in %s (%s)", MONITOR_CANARY_VERDICT,
                        exc)

    async def scale(self, decision: Decision) -> None:
        result = await asyncio.to_thread(self.scaler.act, decision)
        if result.mail is not None:
            self.unqueued.append(message(*result.mail))
            self.queue_unqueued()
        if not result.acted:
            log.info("scale %s: nothing to do (%s)", decision.direction, result.line)

    def queue_unqueued(self) -> None:
        """Moves the mail kept in this process to the outbox, while Redis takes it."""
        while self.unqueued:
            try:
                self.r.rpush(OUTBOX, self.unqueued[0])
            except redis.RedisError as exc:
                log.warning("%d mail(s) not queued yet, Redis refused (%s); next cycle",
                            len(self.unqueued), exc)
                return
            self.unqueued.pop(0)

    async def run(self, once: bool = False) -> None:
        log.info("monitor: every %.0fs, %d rules, SMTP %s", self.cfg.interval_seconds,
                 len(self.cfg.rules), self.cfg.smtp.describe())
        while True:
            started = time.monotonic()
            try:
                self.queue_unqueued()
                await self.cycle()
                await asyncio.to_thread(deliver_due, self.r, self.cfg.smtp)
            except redis.RedisError as exc:
                log.warning("Redis unreachable (%s); retrying next cycle", exc)
            if once:
                if self.scaling is not None:
                    await self.scaling
                return
            # Deliver retries between polls too, so a long interval does not delay mail.
            while time.monotonic() - started < self.cfg.interval_seconds:
                await asyncio.sleep(min(1.0, self.cfg.interval_seconds))
                if time.monotonic() - started < self.cfg.interval_seconds:
                    with contextlib.suppress(redis.RedisError):
                        await asyncio.to_thread(deliver_due, self.r, self.cfg.smtp)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config")
    parser.add_argument("--rules", help="rules YAML (default: the rules in CONFIG)")
    parser.add_argument("--interval", type=float, help="seconds between polls (>= 1)")
    parser.add_argument("--once", action="store_true", help="one cycle, then exit")
    parser.add_argument("--check", action="store_true",
                        help="check the configuration and rules, then exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        cfg = config_mod.load(args.config, args.rules, args.interval)
    except config_mod.ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.check:
        print(f"ok: {len(cfg.rules)} rules, {len(cfg.targets)} static targets")
        return 0
    asyncio.run(Monitor(cfg).run(once=args.once))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
