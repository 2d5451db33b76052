"""A throw-away redis-server on a free loopback port: a password, keyspace notifications
on (as the redis role configures it), nothing written to disk; stopped on exit."""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import redis

from devkit.ports import free_port


def wait_answering(client: Callable[[], redis.Redis], proc: subprocess.Popen[bytes],
                   timeout: float) -> None:
    """Returns once a client from ``client()`` gets an answer to PING; raises the
    connection error when ``timeout`` seconds passed or the server exited."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if client().ping():
                return
        except redis.ConnectionError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise
            time.sleep(0.02)


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
            wait_answering(lambda: redis.Redis.from_url(url, socket_timeout=1), proc, timeout)
            yield url
        finally:
            proc.terminate()
            proc.wait(10)
