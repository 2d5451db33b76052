"""Pushes every change to the open pages: keyspace notifications of the environment's
Redis (as the operator, one pattern per key family it may read) mark sections dirty, a
refresher re-reads them together and sends what changed as Server-Sent Events. Pages
also get a full resynchronisation every ``RESYNC_SECONDS`` (notifications can be
missed: a reconnect, a Redis restart), and the traffic section every second while any
page is open."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis
import redis.asyncio as aioredis

from cdpipe.dashboard.view import STATE, STATE_SECTIONS, sections_of
from cdpipe_host.keys import OPERATOR_CHANNELS, key_of_channel

log = logging.getLogger("cdpipe.dashboard")

PATTERNS = OPERATOR_CHANNELS  # exactly the patterns the operator's ACL allows
RESYNC_SECONDS = 10.0
COALESCE_SECONDS = 0.005  # a burst of notifications (one MULTI) is read once
QUEUE_FRAMES = 256  # a page that falls this far behind is disconnected


Message = tuple[str, str]  # (section, its JSON on one line)


def frame(event: str, encoded: str) -> bytes:
    """One Server-Sent Event: its name, and its data (JSON on one line)."""
    return f"event: {event}\ndata: {encoded}\n\n".encode()


def ws_message(event: str, encoded: str) -> str:
    """One WebSocket text message: ``{"event": name, "data": ...}``."""
    return f'{{"event":{json.dumps(event)},"data":{encoded}}}'


class Hub:
    """The open pages (one queue each, whatever carries it: WebSocket or Server-Sent
    Events) and the last payload of each section, which a new page receives first."""

    def __init__(self) -> None:
        self.clients: set[asyncio.Queue[Message | None]] = set()
        self.last: dict[str, str] = {}

    def publish(self, section: str, data: Any) -> bool:
        """Sends a section to every page, unless it is what they already have."""
        encoded = json.dumps(data, separators=(",", ":"), sort_keys=True)
        if self.last.get(section) == encoded:
            return False
        self.last[section] = encoded
        message = (section, encoded)
        for queue in list(self.clients):
            try:
                queue.put_nowait(message)
            except asyncio.QueueFull:  # too slow: its stream ends, the page reconnects
                self.end(queue)  # and starts afresh from the latest
        return True

    def end(self, queue: asyncio.Queue[Message | None]) -> None:
        """Ends one page's feed: what it did not get yet is dropped."""
        self.clients.discard(queue)
        while not queue.empty():
            queue.get_nowait()
        queue.put_nowait(None)

    def join(self) -> asyncio.Queue[Message | None]:
        queue: asyncio.Queue[Message | None] = asyncio.Queue(QUEUE_FRAMES)
        for section, encoded in self.last.items():
            queue.put_nowait((section, encoded))
        self.clients.add(queue)
        return queue

    def leave(self, queue: asyncio.Queue[Message | None]) -> None:
        self.clients.discard(queue)


class Live:
    """The background tasks: subscriber, refresher, resync and traffic."""

    def __init__(self, hub: Hub, redis_url: Callable[[], str | None],
                 read: Callable[[set[str]], dict[str, Any]],
                 traffic: Callable[[], Awaitable[dict[str, Any] | None]],
                 all_sections: tuple[str, ...],
                 stale_in: Callable[[], float | None] = lambda: None) -> None:
        """``stale_in``: seconds until a change of the state that ``read`` had to put
        off may be read (None: nothing put off); the refresher comes back then."""
        self.hub = hub
        self.redis_url = redis_url
        self.read = read
        self.traffic = traffic
        self.all_sections = all_sections
        self.stale_in = stale_in
        self.come_back: asyncio.TimerHandle | None = None
        self.dirty: set[str] = set(all_sections)
        self.wake = asyncio.Event()
        self.wake.set()
        self.tasks: list[asyncio.Task[None]] = []
        self.notifications = 0

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.tasks = [loop.create_task(c) for c in (
            self._subscribe(), self._refresh(), self._resync(), self._traffic())]

    async def stop(self) -> None:
        if self.come_back is not None:
            self.come_back.cancel()
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def mark(self, sections: set[str]) -> None:
        if sections:
            self.dirty |= sections
            self.wake.set()

    async def _subscribe(self) -> None:
        while True:
            url = self.redis_url()
            if url is None:
                await asyncio.sleep(2)
                continue
            client = aioredis.Redis.from_url(url, decode_responses=True,
                                             socket_connect_timeout=3)
            try:
                async with client.pubsub() as pubsub:
                    await pubsub.psubscribe(*PATTERNS)
                    self.hub.publish("connection", {"redis": "live", "since": time.time()})
                    self.mark(set(self.all_sections))  # what changed while away
                    async for message in pubsub.listen():
                        if message.get("type") != "pmessage":
                            continue
                        self.notifications += 1
                        self.mark(sections_of(key_of_channel(str(message["channel"]))))
            except (redis.RedisError, OSError) as exc:
                log.warning("keyspace notifications lost (%s); reconnecting", exc)
                self.hub.publish("connection", {"redis": f"unreachable: {exc}",
                                                "since": time.time()})
            finally:
                await client.aclose()
            await asyncio.sleep(1)

    async def _refresh(self) -> None:
        while True:
            await self.wake.wait()
            await asyncio.sleep(COALESCE_SECONDS)
            self.wake.clear()
            wanted, self.dirty = self.dirty, set()
            try:
                sections = await asyncio.to_thread(self.read, wanted)
            except Exception as exc:  # Redis down, a state file mid-write: said, retried
                log.warning("cannot read %s: %s", ", ".join(sorted(wanted)), exc)
                self.hub.publish("connection", {"redis": f"unreachable: {exc}",
                                                "since": time.time()})
                self.dirty |= wanted  # read again at the next wake or resync
                continue
            for name, data in sections.items():
                self.hub.publish(name, data)
            if (wait := self.stale_in()) is not None and self.come_back is None:
                self.come_back = asyncio.get_running_loop().call_later(
                    wait + 0.01, self._read_state_again)

    def _read_state_again(self) -> None:
        self.come_back = None
        self.mark({STATE, *STATE_SECTIONS})

    async def _resync(self) -> None:
        while True:
            await asyncio.sleep(RESYNC_SECONDS)
            self.mark(set(self.all_sections))

    async def _traffic(self) -> None:
        while True:
            started = time.monotonic()
            if self.hub.clients:
                try:
                    section = await self.traffic()
                except Exception as exc:  # the page says so; the dashboard goes on
                    log.warning("traffic: %s", exc)
                    section = {"error": str(exc)}
                if section is not None:
                    self.hub.publish("traffic", section)
            await asyncio.sleep(max(0.05, 1.0 - (time.monotonic() - started)))
