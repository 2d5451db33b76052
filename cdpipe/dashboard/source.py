"""The environment as the page reads it (``Source``): the state, read again after a
change that may have moved instances or commits but at most every STATE_MIN_SECONDS,
and the operator's Redis client and HAProxy's stats page."""

from __future__ import annotations

import threading
import time
from typing import Any

import redis

from cdpipe import controls, secret_files
from cdpipe.dashboard import actor, view
from cdpipe.environment import Environment
from cdpipe.errors import CdpipeError
from cdpipe.redis_users import OPERATOR

STATE_MIN_SECONDS = {"local": 0.5, "aws": 5.0}  # the least time between two reads of it
# The environment the page reads: its own (it acts itself), or through its actor.
PageEnvironment = Environment | actor.ActorEnvironment


class Source:
    """The environment as the page reads it: the state (read again once after a change
    that may have moved instances or commits, at most every STATE_MIN_SECONDS; a change
    within that time is read at the next read after it, the resynchronisation's at the
    latest) and the operator's Redis client."""

    def __init__(self, env: PageEnvironment) -> None:
        self.env = env
        self.lock = threading.Lock()
        self.read_at = time.monotonic()
        self.stale = False  # a change moved the state; not read again yet (too soon)
        self._client: redis.Redis | None = None
        self._url: str | None = None

    def redis_url(self) -> str | None:
        with self.lock:
            return controls.redis_url(self.env.settings, self.env.state, OPERATOR)

    def client(self) -> redis.Redis:
        url = controls.redis_url(self.env.settings, self.env.state, OPERATOR)
        if self._client is None or url != self._url:
            self._client = controls.client(self.env.settings, self.env.state)
            self._url = url
        return self._client

    def read(self, wanted: set[str]) -> dict[str, Any]:
        with self.lock:
            if view.STATE in wanted:
                self.stale = True
            pause = STATE_MIN_SECONDS.get(self.env.state.provider, 10.0)
            if self.stale and time.monotonic() - self.read_at > pause:
                self.env.reread()
                self.read_at, self.stale = time.monotonic(), False
            if not self.env.state.instances:
                raise CdpipeError("no environment is up; run `cdpipe up`")
            return view.read(self.client(), self.env.state, wanted)

    def stale_in(self) -> float | None:
        """Seconds until a change that moved the state, not read yet because it came
        too soon after the last read, may be read; None when the state is current."""
        with self.lock:
            if not self.stale:
                return None
            pause = STATE_MIN_SECONDS.get(self.env.state.provider, 10.0)
            return max(0.0, pause - (time.monotonic() - self.read_at))

    def stats_request(self) -> tuple[str, str] | None:
        """(URL of HAProxy's stats CSV, its password), or None without a proxy."""
        proxies = self.env.state.of_role("proxy")
        if not proxies:
            return None
        password = secret_files.read(self.env.settings.secrets_dir, "stats_password") or ""
        return proxies[0].url("stats") + "/;csv", password

    def roles(self) -> dict[str, str]:
        return {i.id: i.role for i in self.env.state.instances}
