"""A bounded load of GET requests through the proxy, recording every answer."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import requests

from devkit.roles import role_defaults


@dataclass(frozen=True)
class Sample:
    started: float
    finished: float
    status: int  # 0: the request failed (connection error, timeout)
    role: str | None
    instance: str | None
    error: str = ""  # what went wrong: the exception, or the start of a non-200 body


@dataclass
class Load:
    url: str
    threads: int = 4
    max_seconds: float = 60.0
    pause: float = 0.0  # seconds between a thread's requests (a light, steady load)
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> Load:
        deadline = time.monotonic() + self.max_seconds
        for _ in range(self.threads):
            worker = threading.Thread(target=self._run, args=(deadline,), daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(10)

    def _run(self, deadline: float) -> None:
        with requests.Session() as session:
            while not self._stop.is_set() and time.monotonic() < deadline:
                sample = timed_get(session, self.url)  # a new user each time
                with self._lock:
                    self.samples.append(sample)
                if self.pause:
                    self._stop.wait(self.pause)

    def failures(self) -> list[Sample]:
        with self._lock:
            return [s for s in self.samples if s.status != 200]

    def since(self, t: float) -> list[Sample]:
        with self._lock:
            return [s for s in self.samples if s.started >= t]


def timed_get(session: requests.Session, url: str) -> Sample:
    """One GET as a new user (no cookie), timed and recorded; never raises."""
    session.cookies.clear()
    started = time.monotonic()
    try:
        resp = session.get(url, timeout=5)
        body = resp.json() if resp.status_code == 200 else {}
        return Sample(started, time.monotonic(), resp.status_code, body.get("role"),
                      body.get("instance"), "" if resp.ok else resp.text[:200])
    except (requests.RequestException, ValueError) as exc:
        return Sample(started, time.monotonic(), 0, None, None, repr(exc)[:300])


def failed(load: Load) -> str:
    """What failed, for an assertion's message: how many, by status (0: no answer),
    when (seconds from the first request) and what went wrong."""
    bad = load.failures()
    by_status = Counter(s.status for s in bad)
    t0 = min((s.started for s in load.samples), default=0.0)
    return (f"{len(bad)} of {len(load.samples)} requests failed, by status "
            f"{dict(sorted(by_status.items()))}; (started, took) in s: "
            f"{[(round(s.started - t0, 2), round(s.finished - s.started, 2)) for s in bad]}; "
            f"errors: {[s.error for s in bad[:5]]}")


_APP = role_defaults("app")
# Requests one app instance serves at once (gunicorn's workers times their threads).
APP_CONCURRENCY = int(_APP["app_workers"]) * int(_APP["app_threads"])
CUT_OFF = "IncompleteRead"  # requests' words for a response whose body stopped short


def split_failures(load: Load, dead_at: float) -> tuple[list[Sample], list[Sample]]:
    """A server's kill, in the failures of a load: (cut off, the rest). Cut off are the
    requests sent before ``dead_at`` (the killed processes were gone) whose response had
    begun when it died: its headers had passed the proxy, so neither HAProxy nor any
    streaming proxy can send the request again; at most one per request in flight on
    the killed server. Every other failure is one the proxy should have prevented."""
    cut, rest = [], []
    for sample in load.failures():
        was_in_flight = sample.started < dead_at and CUT_OFF in sample.error
        (cut if was_in_flight else rest).append(sample)
    return cut, rest


def share(samples: list[Sample], role: str) -> float:
    return sum(s.role == role for s in samples) / max(1, len(samples))


def count_requests(url: str, n: int, threads: int = 4) -> list[Sample]:
    """Exactly n requests (as new users), spread over a few threads."""
    out: list[Sample] = []
    lock = threading.Lock()
    per = [n // threads + (1 if k < n % threads else 0) for k in range(threads)]

    def run(count: int) -> None:
        with requests.Session() as session:
            for _ in range(count):
                sample = timed_get(session, url)
                with lock:
                    out.append(sample)

    workers = [threading.Thread(target=run, args=(c,)) for c in per]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return out
