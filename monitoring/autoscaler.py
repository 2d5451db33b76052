"""Scaling decisions for prod: out when the average stays above the rule's upper
threshold for its polls, in when it stays below its lower one; a cooldown after each
action (kept in Redis across restarts). The action itself is the ``cdpipe scale``
command, which provisions, deploys and registers (or drains and removes).

Its exit codes: 0 done; 3 nothing to do (at ``--max``, or no autoscaled instance to
remove): that direction rests until the number of prod instances changes; 4 AWS
refused to create the instance (capacity, limits); any other: it failed (its last line
says whether a new instance that never became healthy was terminated). A failure
starts the cooldown like an action, so it is retried once per cooldown, not at every
poll; it is mailed once per failing streak (kept in Redis, ``monitor:scale:failing``,
so a restarted monitor does not mail it again), reminded after the repeat interval,
and the first success after it is mailed as a recovery.

Every action that ran (done or failed; not "nothing to do") is recorded at the head of
``monitor:scale:events`` (JSON: at, direction, ok, line, reason; the newest
``HISTORY_LENGTH`` kept) for the dashboard; a Redis error there is logged, never raised.
"""

from __future__ import annotations

import logging
import subprocess
import time
from dataclasses import dataclass

import redis

from cdpipe_host import history
from cdpipe_host.keys import MONITOR_SCALE_EVENTS, MONITOR_SCALE_FAILING, MONITOR_SCALE_LAST
from cdpipe_host.names import one_line
from cdpipe_host.values import text
from monitoring.config import Rule, Scaling
from monitoring.records import ScaleEvent, ScaleStreak

log = logging.getLogger("monitor.scale")
LAST_ACTION = MONITOR_SCALE_LAST
FAILING = MONITOR_SCALE_FAILING
EVENTS = MONITOR_SCALE_EVENTS
NOTHING_TO_DO = 3  # exit code of `cdpipe scale` at its limits
AWS_REFUSED = 4  # exit code of `cdpipe scale out` when AWS refuses (capacity, limits)
COMMAND_TIMEOUT = 900.0
# After COMMAND_TIMEOUT the command is asked to stop (SIGTERM: sudo relays it to cdpipe,
# which stops its playbook and releases the environment lock), and killed only if it
# has not ended this long after.
STOP_GRACE = 30.0


@dataclass
class Decision:
    direction: str  # out | in
    reason: str


@dataclass
class Result:
    """What a scale action did: ``acted`` (False: nothing to do), its line, and the
    mail to send (subject, body), if any."""

    acted: bool
    line: str
    mail: tuple[str, str] | None = None


class Autoscaler:
    def __init__(self, cfg: Scaling, r: redis.Redis, remind_seconds: float = 3600.0
                 ) -> None:
        self.cfg = cfg
        self.r = r
        self.remind_seconds = remind_seconds
        self.above: dict[str, int] = {}
        self.below: dict[str, int] = {}
        # After "nothing to do" (at the maximum, or no autoscaled instance left), that
        # direction rests until the number of prod instances changes.
        self.idle: dict[str, int] = {}
        self.prod_count = 0
        # The last action when Redis could not record it (down or out of memory right
        # after a scale): the cooldown holds in this process all the same.
        self.last_local: float | None = None
        # Failing streaks Redis could not record: kept here meanwhile.
        self.streaks_local: dict[str, ScaleStreak] = {}

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

    def _run(self, cmd: list[str]) -> tuple[int | None, str, str]:
        """(exit code or None when it did not end in time, last line of output, last
        line of errors)."""
        try:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True)
        except OSError as exc:
            return None, "", f"the scale command did not start: {exc}"
        try:
            stdout, stderr = proc.communicate(timeout=COMMAND_TIMEOUT)
        except subprocess.TimeoutExpired:
            # Killed at once, sudo would die and leave cdpipe running, holding the lock.
            proc.terminate()
            try:
                proc.communicate(timeout=STOP_GRACE)
                how = "stopped"
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
                how = f"killed {STOP_GRACE:.0f} s after it was asked to stop"
            return None, "", (f"the scale command did not end within "
                              f"{COMMAND_TIMEOUT:.0f} s ({how})")
        last = (stdout.strip().splitlines() or [""])[-1]
        err = (stderr.strip().splitlines() or [last or "no output"])[-1]
        return proc.returncode, last, err.removeprefix("error: ")

    def act(self, decision: Decision) -> Result:
        """Runs the scale command; what it did and the mail to send."""
        direction = decision.direction
        cmd = [*self.cfg.command, direction, "--max", str(self.cfg.max_count)]
        log.info("scaling %s: %s", direction, decision.reason)
        code, line, err = self._run(cmd)
        if code == NOTHING_TO_DO:
            self.idle[direction] = self.prod_count
            return Result(False, line)
        self.idle.clear()
        self.above.clear()
        self.below.clear()
        stamp, self.last_local = time.time(), None
        try:
            self.r.set(LAST_ACTION, str(stamp))
        except redis.RedisError as exc:
            self.last_local = stamp
            log.warning("scale %s done, but Redis did not record it (%s); the cooldown "
                        "holds in this process", direction, exc)
        if code == 0:
            result = self._succeeded(decision, line)
        else:
            result = self._failed(decision, code, one_line(err, 600), stamp)
        self._record(decision, code == 0, result.line, stamp)
        return result

    def _record(self, decision: Decision, ok: bool, line: str, at: float) -> None:
        """The action at the head of ``monitor:scale:events``; never raises."""
        try:
            history.record(self.r, EVENTS, ScaleEvent(
                at=at, direction=decision.direction, ok=ok, line=one_line(line, 600),
                reason=decision.reason).dumps())
        except redis.RedisError as exc:
            log.warning("scale %s not recorded in %s (%s)", decision.direction, EVENTS, exc)

    def _succeeded(self, decision: Decision, line: str) -> Result:
        direction, word = decision.direction, decision.direction.upper()
        streak = self._streak(direction)
        if streak is None:
            return Result(True, line, (f"[cdpipe] SCALE {word}: {line}",
                                       f"{line}\nWhy: {decision.reason}\n"))
        self._save_streak(direction, None)
        since = _when(streak.since)
        log.info("scale %s recovered after %s failure(s) since %s", direction,
                 streak.failures, since)
        return Result(True, line, (
            f"[cdpipe] SCALE {word} RECOVERED: {line}",
            f"{line}\nIt had failed {streak.failures} time(s) since {since}; the "
            f"last failure: {streak.last}\nWhy: {decision.reason}\n"))

    def _failed(self, decision: Decision, code: int | None, err: str, now: float
                ) -> Result:
        direction, word = decision.direction, decision.direction.upper()
        line = f"scale {direction} FAILED: {err}"
        what = ("AWS refused to create the instance (capacity or limits)"
                if code == AWS_REFUSED else f"the scale command failed (exit {code})")
        streak = self._streak(direction)
        retry = (f"It is retried every {self.cfg.cooldown_seconds:.0f} s (the cooldown) "
                 "while the need lasts; no more mail until it succeeds, a reminder after "
                 f"{self.remind_seconds:.0f} s.")
        if streak is None:
            self._save_streak(direction, ScaleStreak(since=now, failures=1, mailed=now,
                                                     last=err))
            return Result(True, line, (f"[cdpipe] SCALE {word} FAILED: {err}",
                                       f"{what}: {err}\nWhy: {decision.reason}\n{retry}\n"))
        failures = streak.failures + 1
        mailed = streak.mailed
        remind = not (now - self.remind_seconds < mailed <= now)  # a step back: remind
        streak = streak.model_copy(update={"failures": failures, "last": err,
                                           "mailed": now if remind else mailed})
        self._save_streak(direction, streak)
        if remind:
            since = _when(streak.since)
            return Result(True, line, (
                f"[cdpipe] SCALE {word} STILL FAILING ({failures} times): {err}",
                f"{what}: {err}\nFailing since {since}, {failures} time(s).\n"
                f"Why: {decision.reason}\n{retry}\n"))
        log.warning("scale %s failed again (%d times since %s; mailed already): %s",
                    direction, failures, _when(streak.since), err)
        return Result(True, line)

    def _streak(self, direction: str) -> ScaleStreak | None:
        """The failing streak of a direction: Redis's, else this process's copy."""
        try:
            raw = text(self.r.hget(FAILING, direction))
        except redis.RedisError:
            raw = None
        if raw:
            streak = ScaleStreak.loads(raw)
            if streak is not None:
                return streak
            log.warning("%s %s does not read as a streak; counted as none", FAILING,
                        direction)
        return self.streaks_local.get(direction)

    def _save_streak(self, direction: str, streak: ScaleStreak | None) -> None:
        try:
            if streak is None:
                self.r.hdel(FAILING, direction)
            else:
                self.r.hset(FAILING, direction, streak.dumps())
        except redis.RedisError as exc:
            log.warning("Redis did not record the scale %s streak (%s); kept in this "
                        "process", direction, exc)
            if streak is not None:
                self.streaks_local[direction] = streak
                return
        self.streaks_local.pop(direction, None)


def _when(stamp: object) -> str:
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(str(stamp))))
    except (TypeError, ValueError, OverflowError):
        return "an unknown time"
