"""The environment lock: one state-changing actor at a time across machines.

A Jenkins agent deploying and the monitor scaling out (on the proxy machine, with its
own CDPIPE_HOME) share only the environment's Redis, so the lock lives there: the key
``lock:environment`` (``cdpipe_host.keys.ENV_LOCK``), written by the deployer user,
readable by the operator (``cdpipe status`` shows it). Its value is the owner, e.g.
``deploy on jenkins-7 pid 4242 since 2026-11-27T03:10:00Z [3f2a9c1b]`` (the bracketed
part is random: two owners never share a value).

It is redis-py's ``redis.lock.Lock`` with that owner as its token: taken with
``SET NX PX``, extended and released by Lua scripts that first check the token
(``EVALSHA``, ``SCRIPT LOAD`` when the server does not know the script yet), so only
its owner extends or releases it. It expires ``expiry`` seconds (120) after its last
extension; a thread of the holder extends it every quarter of that while the command
runs, so a long deploy keeps it and a crashed holder frees it within the expiry.

The holder prints ``took the environment lock at <UTC time> (<owner>)`` once it holds
it and ``releasing the environment lock at <UTC time>`` just before it lets it go (the
times, to the millisecond, order the holders of one machine's clock). A waiting actor
prints one line when it starts waiting and one every 30 s, naming the
holder; after CDPIPE_LOCK_WAIT_SECONDS (default 1800) it gives up with one line:
``the environment is locked by <owner> (expires in N s); try again later``.

A holder that cannot extend the lock for longer than the expiry (Redis unreachable)
has lost it: it says so at once, and when its command ends that is an error (exit 1),
since another actor may have acted meanwhile.
"""

from __future__ import annotations

import math
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import redis
from redis.exceptions import LockError, LockNotOwnedError
from redis.lock import Lock

from cdpipe.errors import CdpipeError
from cdpipe_host.keys import ENV_LOCK
from cdpipe_host.names import one_line
from cdpipe_host.values import text

DEFAULT_EXPIRY_SECONDS = 120.0
DEFAULT_WAIT_SECONDS = 1800.0
WAIT_ENV = "CDPIPE_LOCK_WAIT_SECONDS"
PROGRESS_EVERY_SECONDS = 30.0
POLL_SECONDS = 0.2
Show = Callable[[str], None]


@dataclass(frozen=True)
class Holder:
    owner: str
    seconds_left: float | None  # None: the key has no expiry (set by hand)

    def expires(self) -> str:
        if self.seconds_left is None:
            return "never expires: set by hand?"
        return f"expires in {math.ceil(self.seconds_left)} s"


def stamp() -> str:
    """Now, UTC, to the millisecond: when a holder took and released the lock."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def owner_of(command: str) -> str:
    """What holds the lock: command, host, pid, start time (UTC) and a random id."""
    since = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return (f"{command} on {socket.gethostname()} pid {os.getpid()} since {since} "
            f"[{secrets.token_hex(4)}]")


def wait_seconds_setting() -> float:
    """CDPIPE_LOCK_WAIT_SECONDS, or its default; a one-line error when it is no number."""
    raw = os.environ.get(WAIT_ENV, "").strip()
    if not raw:
        return DEFAULT_WAIT_SECONDS
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0 or math.isinf(value):
        raise CdpipeError(f"bad setting {WAIT_ENV}: {raw[:40]!r} is not a number of "
                          "seconds >= 0; fix or unset it")
    return value


def holder(r: redis.Redis) -> Holder | None:
    """Who holds the environment lock and for how long yet; None when it is free.
    RedisError goes up."""
    pipe = r.pipeline(transaction=True)
    pipe.get(ENV_LOCK)
    pipe.pttl(ENV_LOCK)
    value, pttl = pipe.execute()
    if value is None:
        return None
    left = None if int(pttl) < 0 else int(pttl) / 1000
    return Holder(one_line(str(text(value)), 300), left)


class EnvironmentLock:
    """One hold of the lock by ``owner``; ``acquire`` then ``release`` (``held`` does
    both)."""

    def __init__(self, r: redis.Redis, owner: str, show: Show,
                 expiry: float = DEFAULT_EXPIRY_SECONDS) -> None:
        self.r = r
        self.owner = owner
        self.show = show
        self.expiry = expiry
        # Not thread-local: the extending thread uses the token the main thread took.
        self.lock = Lock(r, ENV_LOCK, timeout=expiry, thread_local=False)
        self.lost: str | None = None
        self.waited = False  # whether another actor held it when this one asked
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self, wait_seconds: float, progress_every: float = PROGRESS_EVERY_SECONDS
                ) -> None:
        """Takes the lock, waiting at most ``wait_seconds`` for its holder. RedisError
        goes up; CdpipeError at the deadline."""
        started = time.monotonic()
        next_progress = started
        last: Holder | None = None
        while True:
            if self.lock.acquire(blocking=False, token=self.owner):
                break
            self.waited = True
            last = holder(self.r) or last
            now = time.monotonic()
            if now - started >= wait_seconds:
                who = last or Holder("another actor", 0)
                raise CdpipeError(f"the environment is locked by {who.owner} "
                                  f"({who.expires()}); try again later")
            if now >= next_progress and last is not None:
                waited = ("waiting" if next_progress == started
                          else f"still waiting after {now - started:.0f} s")
                self.show(f"{waited} for the environment lock: held by {last.owner} "
                          f"({last.expires()}); giving up after {wait_seconds:.0f} s")
                next_progress = now + progress_every
            time.sleep(min(POLL_SECONDS, max(0.0, started + wait_seconds - now)))
        self.show(f"took the environment lock at {stamp()} ({self.owner})")
        self._thread = threading.Thread(target=self._keep, name="env-lock", daemon=True)
        self._thread.start()

    def _keep(self) -> None:
        """Extends the lock every quarter of its expiry; after a failure, every second
        until it works again or the expiry has passed since the last success (then
        the key is gone from Redis: the lock is lost)."""
        last_ok = time.monotonic()
        interval = self.expiry / 4
        while not self._stop.wait(interval):
            try:
                self.lock.reacquire()
            except LockNotOwnedError:
                silent = time.monotonic() - last_ok
                self._lose(f"Redis did not answer for {silent:.0f} s, its expiry passed"
                           if silent >= self.expiry else "its key is gone or another's")
                return
            except (redis.RedisError, LockError) as exc:
                silent = time.monotonic() - last_ok
                if silent >= self.expiry:
                    self._lose(f"Redis did not answer for {silent:.0f} s: {exc}")
                    return
                interval = min(1.0, self.expiry / 4)
                continue
            last_ok = time.monotonic()
            interval = self.expiry / 4

    def _lose(self, why: str) -> None:
        self.lost = why
        self.show(f"LOST the environment lock ({why}); another actor may act now")

    def forget(self) -> None:
        """The Redis that held the lock is gone (``down``): stop extending it, release
        nothing, report nothing."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.lost = None
        self._thread = None

    def release(self) -> None:
        """Stops extending and releases the lock if this owner still holds it. A lock
        that was lost is an error (CdpipeError)."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        if self.lost is None:
            # The time before the release: no one else took the lock before it.
            self.show(f"releasing the environment lock at {stamp()}")
            try:
                self.lock.release()
            except LockNotOwnedError:
                self.lost = "it had expired when released"
            except (redis.RedisError, LockError) as exc:
                self.show(f"could not release the environment lock ({exc}); it frees "
                          f"itself within {self.expiry:.0f} s")
                return
        if self.lost is not None:
            raise CdpipeError(f"the environment lock was lost while the command ran "
                              f"({self.lost}): another actor may have acted at the same "
                              "time; check `cdpipe status`")


@contextmanager
def held(r: redis.Redis, command: str, show: Show, wait_seconds: float | None = None,
         expiry: float = DEFAULT_EXPIRY_SECONDS) -> Iterator[EnvironmentLock]:
    """Holds the environment lock as ``command`` while the block runs. A RedisError
    while taking it goes up (the caller decides); once it is held, losing it is
    reported at once and is an error when the block ends (unless the block failed:
    its own error is the one that goes up)."""
    lock = EnvironmentLock(r, owner_of(command), show, expiry)
    lock.acquire(wait_seconds_setting() if wait_seconds is None else wait_seconds)
    try:
        yield lock
    except BaseException:
        try:
            lock.release()
        except CdpipeError as exc:
            show(str(exc))
        raise
    lock.release()
