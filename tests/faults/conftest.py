"""The fault suite's one local environment, its steady load and what each case records.

One environment for the session (`cdpipe up` with 1-second monitor polls and a rule
that never fires, so no scale-out interferes); every case runs under a steady, bounded
load through the proxy (loopback), and the ``healthy`` fixture puts the environment back
as `up` left it before and after each case: every supervised program running, Redis
answering and writable, no flag, no alert firing, no mail queued, prod-1 and canary-1 in
rotation with the default weights.

With ``FAULTS_REPORT=<file>`` in the environment each case appends one JSON line (case,
requests sent, failed, seconds from the fault's end to convergence):
``bench/fault_table.py`` runs the suite that way and prints the table.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Generator, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil
import pytest
import redis

from tests.e2e.conftest import LocalEnv, make_env
from tests.e2e.load import Load
from tests.e2e.observe import reset_runtime, status, wait_weights
from tests.support import maildir_subjects, wait_until

# A rule that never fires (memory above 99%): the monitor polls every second, judges
# the canary and raises `instance-down/*`, but does not scale under the suite's load.
RULES = """\
rules:
  - name: prod-memory
    metric: memory_percent
    role: prod
    upper: 99
    for: 3
"""
# Every program the environment supervises, by instance.
PROGRAMS = {
    "proxy-1": ("haproxy", "proxy-controller", "monitor", "mailsink", "agent"),
    "redis-1": ("redis", "agent"),
    "prod-1": ("app",),
    "canary-1": ("app",),
}
DEFAULT_WEIGHT = 33


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "faults: the fault suite (a real local environment)")


@pytest.fixture(scope="package")  # down once the fault suite is done, not at the end
def fault_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalEnv]:
    root = tmp_path_factory.mktemp("faults")
    env = make_env(root)
    (root / "rules.yml").write_text(RULES)
    try:
        env.cdpipe("up", "--ref", env.new, "--monitor-interval", "1",
                   "--monitor-rules", str(root / "rules.yml"))
        yield env
    finally:
        env.cdpipe("down", check=False)


# -- what a case looks at -------------------------------------------------------------
# `cdpipe status --json` costs a second or more on a busy machine; what the suite needs of
# it (Redis' URL, the app instances) does not change during the session: read it once.
_REPORTS: dict[Path, dict] = {}  # type: ignore[type-arg]
_CLIENTS: dict[Path, redis.Redis] = {}


def report(env: LocalEnv) -> dict:  # type: ignore[type-arg]
    if env.home not in _REPORTS:
        _REPORTS[env.home] = status(env)
    return _REPORTS[env.home]


def admin_redis(env: LocalEnv) -> redis.Redis:
    """A client allowed CONFIG, DEBUG and writes to the monitor's keys (the admin Redis
    user); one per environment, reconnecting by itself."""
    if env.home not in _CLIENTS:
        _CLIENTS[env.home] = redis.Redis.from_url(
            env.redis_url(), decode_responses=True, socket_timeout=5,
            socket_connect_timeout=5)
    return _CLIENTS[env.home]


def states(env: LocalEnv) -> dict[tuple[str, str], str]:
    """(instance, program) -> supervisor's state name, one supervisorctl per instance."""
    out: dict[tuple[str, str], str] = {}
    for instance in PROGRAMS:
        for line in env.supervisorctl(instance, "status").splitlines():
            fields = line.split()
            if len(fields) >= 2:
                out[(instance, fields[0])] = fields[1]
    return out


def pid(env: LocalEnv, instance: str, program: str) -> int:
    """The supervised program's pid; 0 when it is not running."""
    out = env.supervisorctl(instance, "pid", program)
    return int(out) if out.isdigit() else 0


def running(env: LocalEnv, instance: str, program: str) -> bool:
    return "RUNNING" in env.supervisorctl(instance, "status", program)


def maildir(env: LocalEnv) -> Path:
    return env.home / "instances" / "proxy-1" / "monitor" / "Maildir"


def mails(env: LocalEnv) -> list[str]:
    return maildir_subjects(maildir(env))


def mails_since_now(env: LocalEnv) -> Callable[[], Counter[str]]:
    """A counter of the mail (subject -> how many) that arrives from now on."""
    before = Counter(mails(env))
    return lambda: Counter(mails(env)) - before


def alerts(env: LocalEnv) -> dict[str, dict]:  # type: ignore[type-arg]
    return {k: json.loads(v) for k, v in admin_redis(env).hgetall("monitor:alerts").items()}


def outbox(env: LocalEnv) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(m) for m in admin_redis(env).lrange("monitor:outbox", 0, -1)]


def steady_load(env: LocalEnv, path: str = "/") -> Load:
    """Two clients, one request every 50 ms each, as new users, for at most 3 minutes."""
    return Load(env.proxy_url + path, threads=2, max_seconds=180, pause=0.05)


def in_rotation(env: LocalEnv, timeout: float = 60) -> None:
    """prod-1 and canary-1 in rotation with the default weights (HAProxy's own view)."""
    wait_weights(env, admin_redis(env), DEFAULT_WEIGHT, timeout=timeout)


def stopped_programs(env: LocalEnv) -> list[tuple[str, str]]:
    now = states(env)
    return [(i, p) for i, programs in PROGRAMS.items() for p in programs
            if now.get((i, p)) != "RUNNING"]


# -- the reset between cases ----------------------------------------------------------
def resume_redis(env: LocalEnv) -> None:
    """A redis-server left stopped (SIGSTOP) by a failed case is continued."""
    redis_pid = pid(env, "redis-1", "redis")
    if redis_pid:
        with contextlib.suppress(psutil.NoSuchProcess, ProcessLookupError):
            if psutil.Process(redis_pid).status() == psutil.STATUS_STOPPED:
                os.kill(redis_pid, signal.SIGCONT)


def restore(env: LocalEnv) -> None:
    """The environment as `up` left it, seen in force (see the module's docstring)."""
    resume_redis(env)
    for instance, program in stopped_programs(env):
        env.supervisorctl(instance, "start", program)
    wait_until(lambda: not stopped_programs(env), 60,
               lambda: f"every supervised program running (not yet: {stopped_programs(env)})",
               interval=0.2)
    r = admin_redis(env)

    def writable() -> bool:
        try:
            return bool(r.set("faults:probe", "1", ex=5))
        except redis.RedisError:
            return False
    wait_until(writable, 30, "Redis answering writes")
    reset_runtime(env, report(env))
    wait_until(lambda: not any(a["state"] == "firing" for a in alerts(env)), 60,
               lambda: f"no alert firing (now: {alerts(env)})", interval=0.2)
    wait_until(lambda: not outbox(env), 60, lambda: f"no mail queued (now: {outbox(env)})",
               interval=0.2)


@pytest.fixture
def healthy(fault_env: LocalEnv) -> Iterator[LocalEnv]:
    """The environment as `up` left it; each case restores it after itself, so it is
    restored before a case only when that did not happen (the first case, or a restore
    that failed)."""
    if not _CLEAN.get(fault_env.home):
        restore(fault_env)
    _CLEAN[fault_env.home] = False
    yield fault_env
    restore(fault_env)
    _CLEAN[fault_env.home] = True


_CLEAN: dict[Path, bool] = {}


# -- the record of each case ----------------------------------------------------------
@dataclass(frozen=True)
class Outcome:
    case: str
    sent: int
    failed: int
    converge_seconds: float
    failed_by_status: dict[str, int]  # "0": no answer (connection error or timeout)


VERDICT = pytest.StashKey[str]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keeps the verdict of each test's call on the item, for ``record``."""
    rep = yield
    if rep.when == "call":
        item.stash[VERDICT] = ("xfailed" if rep.skipped and hasattr(rep, "wasxfail")
                               else "xpassed" if hasattr(rep, "wasxfail") else rep.outcome)
    return rep


@pytest.fixture
def record(request: pytest.FixtureRequest) -> Iterator[list[Outcome]]:
    """Cases append their Outcome here; with the test's verdict it goes to
    ``$FAULTS_REPORT`` (one JSON line) when that is set, for `make bench`."""
    outcomes: list[Outcome] = []
    yield outcomes
    target = os.environ.get("FAULTS_REPORT")
    if target:
        verdict = request.node.stash.get(VERDICT, "error")
        with open(target, "a", encoding="utf-8") as fh:
            for o in outcomes:
                fh.write(json.dumps({**asdict(o), "test": request.node.name,
                                     "verdict": verdict}) + "\n")


def outcome(case: str, load: Load, fault_over: float, converged: float) -> Outcome:
    """A case's figures: ``fault_over`` is when the fault was dealt (a kill) or ended
    (Redis resumed, SMTP back); ``converged`` when everything was in order again."""
    bad = load.failures()
    return Outcome(case, len(load.samples), len(bad), round(converged - fault_over, 2),
                   {str(k): v for k, v in sorted(Counter(s.status for s in bad).items())})


def requests_after(load: Load, since: float, count: int = 20, timeout: float = 30) -> None:
    """Until ``count`` requests started after ``since`` have been answered."""
    wait_until(lambda: sum(s.finished > 0 for s in load.since(since)) >= count, timeout,
               f"{count} requests through the proxy after convergence", interval=0.1)


def now() -> float:
    return time.monotonic()
