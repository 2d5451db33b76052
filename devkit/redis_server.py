"""A throw-away redis-server on a free loopback port: a password, keyspace notifications
on (as the redis role configures it), nothing written to disk; stopped on exit."""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import redis

from devkit.ports import free_port


@contextmanager
def scratch_redis(password: str = "scratch", timeout: float = 5.0) -> Iterator[str]:
    """Yields the server's URL once it answers PING (``redis://default:...``)."""
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        proc = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
             "--requirepass", password, "--save", "", "--appendonly", "no", "--dir", tmp,
             "--notify-keyspace-events", "KA"], stdout=subprocess.DEVNULL)
        url = f"redis://default:{password}@127.0.0.1:{port}/0"
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    if redis.Redis.from_url(url, socket_timeout=1).ping():
                        break
                except redis.ConnectionError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise
                    time.sleep(0.02)
            yield url
        finally:
            proc.terminate()
            proc.wait(10)
