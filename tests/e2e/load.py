"""A bounded load of GET requests through the proxy, recording every answer."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import requests


@dataclass(frozen=True)
class Sample:
    started: float
    finished: float
    status: int  # 0: the request failed (connection error, timeout)
    role: str | None
    instance: str | None


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
                      body.get("instance"))
    except (requests.RequestException, ValueError):
        return Sample(started, time.monotonic(), 0, None, None)


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
