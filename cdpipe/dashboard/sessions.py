"""The operator's login: the operator's password from the secrets directory (the one
``redis-cli --user operator`` uses), a random session id in an HttpOnly, SameSite=Strict
cookie, and a CSRF token per session that every action must send back in a header.

Sessions live in the dashboard process only: a restart logs everyone out."""

from __future__ import annotations

import hmac
import secrets
import time
from collections import deque
from dataclasses import dataclass, field

COOKIE = "cdpipe_session"
CSRF_HEADER = "X-CSRF-Token"
IDLE_SECONDS = 8 * 3600.0
MAX_SESSIONS = 1000


@dataclass
class Session:
    csrf: str
    expires: float
    created: float = field(default_factory=time.time)


class Sessions:
    def __init__(self, password: str | None, idle_seconds: float = IDLE_SECONDS) -> None:
        self.password = password
        self.idle_seconds = idle_seconds
        self._by_id: dict[str, Session] = {}

    def login(self, password: str) -> str | None:
        """A new session id when ``password`` is the operator's; None otherwise (and
        always None when no operator password exists)."""
        if not self.password or not hmac.compare_digest(password.encode(),
                                                        self.password.encode()):
            return None
        self._expire()
        if len(self._by_id) >= MAX_SESSIONS:  # the oldest goes
            oldest = min(self._by_id, key=lambda k: self._by_id[k].created)
            del self._by_id[oldest]
        session_id = secrets.token_urlsafe(32)
        self._by_id[session_id] = Session(csrf=secrets.token_urlsafe(32),
                                          expires=time.time() + self.idle_seconds)
        return session_id

    def get(self, session_id: str | None) -> Session | None:
        """The live session of that id, its idle time renewed; None when unknown or
        expired."""
        if not session_id:
            return None
        session = self._by_id.get(session_id)
        now = time.time()
        if session is None or session.expires < now:
            self._by_id.pop(session_id, None)
            return None
        session.expires = now + self.idle_seconds
        return session

    def allows(self, session_id: str | None, csrf: str | None) -> bool:
        """Whether an action may run: a live session and its CSRF token."""
        session = self.get(session_id)
        return (session is not None and csrf is not None
                and hmac.compare_digest(csrf.encode(), session.csrf.encode()))

    def logout(self, session_id: str | None) -> None:
        if session_id:
            self._by_id.pop(session_id, None)

    def _expire(self) -> None:
        now = time.time()
        for key in [k for k, s in self._by_id.items() if s.expires < now]:
            del self._by_id[key]


CLIENT_FAILURES = 5  # failed logins one client may make per window
TOTAL_FAILURES = 20  # failed logins of all clients together per window
FAILURE_WINDOW_SECONDS = 300.0


class LoginThrottle:
    """Failed logins counted per client and in total over a sliding window. A delay
    per request is no limit (parallel requests pass it together); a count is: once a
    client, or everyone together, has failed that often, logins are refused without
    checking the password until the oldest failure leaves the window."""

    def __init__(self, per_client: int = CLIENT_FAILURES, total: int = TOTAL_FAILURES,
                 window: float = FAILURE_WINDOW_SECONDS) -> None:
        self.per_client = per_client
        self.total = total
        self.window = window
        self._failures: deque[tuple[float, str]] = deque()

    def _forget_old(self, now: float) -> None:
        while self._failures and self._failures[0][0] <= now - self.window:
            self._failures.popleft()

    def wait_seconds(self, client: str) -> float:
        """0 when a login attempt of this client may be checked now; otherwise how long
        until it may."""
        now = time.monotonic()
        self._forget_old(now)
        mine = [at for at, who in self._failures if who == client]
        waits = []
        if len(mine) >= self.per_client:
            waits.append(mine[-self.per_client] + self.window - now)
        if len(self._failures) >= self.total:
            waits.append(self._failures[-self.total][0] + self.window - now)
        return max(waits, default=0.0)

    def failed(self, client: str) -> None:
        self._failures.append((time.monotonic(), client))

    def succeeded(self, client: str) -> None:
        """A client that knows the password starts again from nothing."""
        self._failures = deque(f for f in self._failures if f[1] != client)
