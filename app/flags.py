"""Feature flags for the app, read from Redis keys ``flag:<name>``.

Every check is a Redis GET with a short timeout; an unreachable Redis, a missing key or
an invalid value all mean "off" (the safe default), never an error page.
"""

from __future__ import annotations

import logging

import redis
from flask import Flask, current_app

from cdpipe.flagvalues import FlagValue, InvalidFlagValue, parse

log = logging.getLogger(__name__)
EXTENSION = "cdpipe_flags"
OFF = FlagValue(0.0)


class FlagStore:
    def __init__(self, redis_url: str, timeout: float) -> None:
        self._client: redis.Redis | None = None
        if redis_url:
            self._client = redis.Redis.from_url(
                redis_url,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                decode_responses=True,
            )
        self._invalid_logged: set[tuple[str, str]] = set()

    def value(self, name: str) -> FlagValue:
        if self._client is None:
            return OFF
        key = f"flag:{name}"
        try:
            raw = self._client.get(key)
        except redis.RedisError as exc:
            log.warning("flags: Redis unreachable (%s); %s is off", exc, key)
            return OFF
        if raw is None:
            return OFF
        try:
            return parse(str(raw))
        except InvalidFlagValue:
            if (key, str(raw)) not in self._invalid_logged:
                self._invalid_logged.add((key, str(raw)))
                log.warning("flags: invalid value %r for %s; treating it as off", raw, key)
            return OFF

    def enabled(self, name: str, user_id: str | None = None) -> bool:
        return self.value(name).enabled_for(name, user_id)

    def ping(self) -> bool:
        if self._client is None:
            return False
        try:
            return bool(self._client.ping())
        except redis.RedisError:
            return False


def init_app(app: Flask) -> None:
    app.extensions[EXTENSION] = FlagStore(
        app.config["APP_REDIS_URL"], app.config["APP_REDIS_TIMEOUT"]
    )


def store() -> FlagStore:
    return current_app.extensions[EXTENSION]  # type: ignore[no-any-return]
