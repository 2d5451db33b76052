"""The operator's login: the operator's password from the secrets directory (the one
``redis-cli --user operator`` uses), a random session id in an HttpOnly, SameSite=Strict
cookie, and a CSRF token per session that every action must send back in a header.

Sessions live in the dashboard process only: a restart logs everyone out."""

from __future__ import annotations

import hmac
import secrets
import time
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
