"""Feature flags for the app: an in-process copy of every ``flag:*`` key in Redis.

A flag check is a dictionary lookup, no network round trip. The copy is kept fresh by
Redis keyspace notifications (a plain ``redis-cli SET`` reaches it in milliseconds) and
resynchronised in full every few seconds, since notifications can be missed.

Each process has its own listener thread and Redis connection, started on first use
in that process: a gunicorn worker forked from a master that already used the cache
starts a fresh listener instead of inheriting a dead thread and frozen values.

Redis unreachable: the last known values keep serving (logged, and reported by
``/healthz``) and the copy catches up when Redis returns. Missing or invalid values
mean off; an invalid value is logged once with its key.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

import redis
from flask import Flask, current_app

from cdpipe_host.flagvalues import FlagValue, InvalidFlagValue, parse
from cdpipe_host.keys import FLAGS_CHANNEL, FLAGS_PATTERN, flag_name, key_of_channel
from cdpipe_host.names import DECODE_ERRORS, OnceLog, flag_name_problem, shown
from cdpipe_host.values import text

log = logging.getLogger(__name__)
EXTENSION = "cdpipe_flags"
OFF = FlagValue(0.0)


class FlagCache:
    def __init__(self, redis_url: str, resync_seconds: float = 5.0,
                 timeout: float = 0.5) -> None:
        self.redis_url = redis_url
        self.resync_seconds = resync_seconds
        self.timeout = timeout
        self._values: dict[str, FlagValue] = {}
        self._raw: dict[str, str] = {}
        self._invalid = OnceLog(log)  # each invalid value logged once
        self._owner_pid: int | None = None
        self._start_lock = threading.Lock()
        self._stop = threading.Event()
        self.connected = False
        self.last_sync: float | None = None

    # -- reads (hot path) -------------------------------------------------------------
    def value(self, name: str) -> FlagValue:
        if self._owner_pid != os.getpid():
            self._start()
        return self._values.get(name, OFF)

    def enabled(self, name: str, user_id: str | None = None) -> bool:
        return self.value(name).enabled_for(name, user_id)

    def snapshot(self) -> dict[str, str]:
        if self._owner_pid != os.getpid():
            self._start()
        return dict(self._raw)

    def health(self) -> dict[str, Any]:
        age = None if self.last_sync is None else round(time.monotonic() - self.last_sync, 1)
        return {"redis": "up" if self.connected else "down",
                "flags": "live" if self.connected else "last known values",
                "flags_synced_seconds_ago": age}

    # -- the listener -----------------------------------------------------------------
    def _start(self) -> None:
        with self._start_lock:
            if self._owner_pid == os.getpid():
                return
            # A new process (first use, or a fork): nothing of the parent's is usable.
            self._owner_pid = os.getpid()
            self._stop = threading.Event()
            self.connected = False
            if not self.redis_url:
                return
            client = self._client()
            try:
                self._full_sync(client)  # serve the real values from the first request
            except redis.RedisError as exc:
                log.warning("flags: Redis unreachable at start (%s); all flags off until "
                            "it answers", exc)
            thread = threading.Thread(target=self._listen, args=(client,),
                                      name="flag-listener", daemon=True)
            thread.start()

    def _client(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url, decode_responses=True,
                                    socket_timeout=self.timeout,
                                    socket_connect_timeout=self.timeout,
                                    encoding_errors=DECODE_ERRORS)

    def _listen(self, client: redis.Redis) -> None:
        while not self._stop.is_set():
            try:
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.psubscribe(FLAGS_CHANNEL)
                self._full_sync(client)  # after (re)subscribing: nothing missed in between
                next_sync = time.monotonic() + self.resync_seconds
                while not self._stop.is_set():
                    wait = max(0.0, min(next_sync - time.monotonic(), self.timeout))
                    message = pubsub.get_message(timeout=wait)
                    if message is not None:
                        key = key_of_channel(str(message["channel"]))
                        self._store(key, text(client.get(key)))
                    if time.monotonic() >= next_sync:
                        self._full_sync(client)
                        next_sync = time.monotonic() + self.resync_seconds
            except (redis.RedisError, OSError, ValueError) as exc:
                if self.connected:
                    log.warning("flags: lost Redis (%s); serving the last known values", exc)
                self.connected = False
                self._stop.wait(0.5)

    def _full_sync(self, client: redis.Redis) -> None:
        keys = list(client.scan_iter(match=FLAGS_PATTERN, count=1000))
        values = client.mget(keys) if keys else []
        fresh = {k: v for k, v in zip(keys, values, strict=True) if v is not None}
        for key in set(self._raw) - set(fresh):
            self._store(key, None)
        for key, raw in fresh.items():
            self._store(key, text(raw))
        if not self.connected:
            log.info("flags: in sync with Redis (%d flags)", len(fresh))
        self.connected = True
        self.last_sync = time.monotonic()

    def _store(self, key: str, raw: str | None) -> None:
        name = flag_name(key)
        if raw is None:
            self._raw.pop(key, None)
            self._values.pop(name, None)
            return
        if self._raw.get(key) == raw:
            return
        self._raw[key] = raw
        try:
            self._values[name] = parse(raw)
        except InvalidFlagValue:
            # Logged before the value is in force: whoever sees the flag off can find why.
            where = key if flag_name_problem(name) is None else shown(key)
            self._invalid.warning((key, raw), f"flags: invalid value {shown(raw)} for "
                                  f"{where}; the flag is off")
            self._values[name] = OFF

    def close(self) -> None:
        self._stop.set()


def init_app(app: Flask) -> None:
    app.extensions[EXTENSION] = FlagCache(
        app.config["APP_REDIS_URL"],
        resync_seconds=app.config["APP_FLAGS_RESYNC_SECONDS"],
        timeout=app.config["APP_REDIS_TIMEOUT"],
    )


def store() -> FlagCache:
    return current_app.extensions[EXTENSION]  # type: ignore[no-any-return]
