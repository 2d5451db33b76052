"""The app's flag cache against a real redis-server: notifications, resync, fork, outage."""

from __future__ import annotations

import logging
import os
import select
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from flask.testing import FlaskClient

from app import create_app
from app.flags import EXTENSION, FlagCache
from tests.support import wait_until


def eventually(check: Callable[[], bool], what: str, timeout: float = 5.0) -> float:
    """Seconds until check() held (polled every 2 ms); fails after timeout. The app's full
    resync runs every 30 s here, so a change seen within 5 s came by notification. How
    fast it comes is bench/settle_times.py's figure, not a test's assertion."""
    return wait_until(check, timeout, what, interval=0.002)


def cached(client: FlaskClient, key: str) -> str | None:
    """The raw value of ``key`` in the app's flag cache (what its requests are served by)."""
    return client.application.extensions[EXTENSION].snapshot().get(key)  # type: ignore[no-any-return]


@pytest.fixture
def setup(redis_server: tuple[int, str]) -> tuple[FlaskClient, redis.Redis]:
    port, password = redis_server
    url = f"redis://:{password}@127.0.0.1:{port}/0"
    # X-User-Id names users here, as a trusted upstream's header would.
    app = create_app({"APP_REDIS_URL": url, "TESTING": True, "APP_FLAGS_RESYNC_SECONDS": 30,
                      "APP_USER_ID_HEADER": "X-User-Id"})
    return app.test_client(), redis.Redis.from_url(url)


def status(client: FlaskClient, path: str = "/hiddenfeature") -> int:
    return client.get(path).status_code


def test_hiddenfeature_follows_the_flag(setup) -> None:  # type: ignore[no-untyped-def]
    client, r = setup
    assert status(client) == 404
    r.set("flag:hiddenfeature", "on")
    eventually(lambda: status(client) == 200, "200 after SET on")
    r.set("flag:hiddenfeature", "OFF")
    eventually(lambda: status(client) == 404, "404 after SET OFF")
    r.set("flag:hiddenfeature", "yes")
    eventually(lambda: status(client) == 200, "200 after SET yes")
    r.delete("flag:hiddenfeature")
    eventually(lambda: status(client) == 404, "404 after DEL")
    assert client.get("/healthz").get_json()["redis"] == "up"


def test_existing_values_are_served_from_the_first_request(redis_server) -> None:  # type: ignore[no-untyped-def]
    port, password = redis_server
    url = f"redis://:{password}@127.0.0.1:{port}/0"
    redis.Redis.from_url(url).set("flag:hiddenfeature", "on")
    client = create_app({"APP_REDIS_URL": url, "TESTING": True}).test_client()
    assert status(client) == 200


def test_invalid_value_is_off_and_logged_once(setup, caplog) -> None:  # type: ignore[no-untyped-def]
    client, r = setup
    r.set("flag:hiddenfeature", "on")
    eventually(lambda: status(client) == 200, "200 after SET on")
    with caplog.at_level(logging.WARNING):
        r.set("flag:hiddenfeature", "150%")
        eventually(lambda: status(client) == 404, "404 after an invalid value")
        codes = {status(client) for _ in range(5)}
    assert codes == {404}
    lines = [rec.getMessage() for rec in caplog.records if "invalid value" in rec.getMessage()]
    assert len(lines) == 1
    assert "flag:hiddenfeature" in lines[0] and "150%" in lines[0]


def test_percentage_rollout_is_stable_per_user(setup) -> None:  # type: ignore[no-untyped-def]
    client, r = setup
    assert client.get("/greeting").status_code == 200  # starts the app's flag cache
    r.set("flag:new-greeting", "30%")
    # /greeting answers 200 with or without the flag: wait for the value being served.
    eventually(lambda: cached(client, "flag:new-greeting") == "30%",
               "the app's flag cache holding new-greeting at 30%")
    answers = {}
    for n in range(1000):
        body = client.get("/greeting", headers={"X-User-Id": f"u{n}"}).get_json()
        answers[n] = body["variant"]
    share = sum(v == "new" for v in answers.values()) / len(answers)
    assert 0.25 < share < 0.35
    again = {n: client.get("/greeting", headers={"X-User-Id": f"u{n}"}).get_json()["variant"]
             for n in range(0, 1000, 7)}
    assert all(answers[n] == v for n, v in again.items())


def test_cookie_identifies_users_without_a_header(setup) -> None:  # type: ignore[no-untyped-def]
    client, _ = setup
    first = client.get("/greeting")
    assert "cdpipe_uid=" in first.headers["Set-Cookie"]
    uid = first.get_json()["user"]
    assert client.get("/greeting").get_json()["user"] == uid  # the client sends the cookie


def test_forked_child_gets_its_own_listener(setup) -> None:  # type: ignore[no-untyped-def]
    """The known failure of flag SDKs: a fork inherits no thread, values freeze."""
    client, r = setup
    assert status(client) == 404  # the parent's listener runs
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: like a gunicorn worker forked from a master that used flags
        os.close(read_fd)
        ok = False
        try:
            ready = status(client) == 404  # its first flag check starts its own listener
            os.write(write_fd, b"r" if ready else b"x")
            wait_until(lambda: status(client) == 200, 5, "the child seeing the flag",
                       interval=0.005)
            ok = True
        finally:
            os.write(write_fd, b"1" if ok else b"0")
            os._exit(0)
    os.close(write_fd)
    # The child has made its first flag check (it says so on the pipe): then the SET.
    readable, _, _ = select.select([read_fd], [], [], 10)
    assert readable and os.read(read_fd, 1) == b"r", "the forked child did not start"
    r.set("flag:hiddenfeature", "on")
    verdict = os.read(read_fd, 1)
    os.waitpid(pid, 0)
    assert verdict == b"1", "the forked child never saw the new flag value"


def test_redis_outage_keeps_last_values_then_catches_up(tmp_path: Path) -> None:
    from devkit import free_port

    port, password = free_port(), "pw"
    args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--requirepass",
            password, "--save", "", "--appendonly", "no", "--dir", str(tmp_path),
            "--notify-keyspace-events", "KA"]
    url = f"redis://:{password}@127.0.0.1:{port}/0"

    def pings() -> bool:
        try:
            return bool(redis.Redis.from_url(url).ping())
        except redis.ConnectionError:
            return False

    def start() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        wait_until(pings, 10, "redis-server answering PING", interval=0.02)
        return proc

    proc = start()
    try:
        redis.Redis.from_url(url).set("flag:hiddenfeature", "on")
        cache = FlagCache(url, resync_seconds=0.5, timeout=0.2)
        assert cache.enabled("hiddenfeature")
        proc.terminate()
        proc.wait(5)
        eventually(lambda: not cache.connected, "the cache noticing the outage")
        assert cache.enabled("hiddenfeature")  # last known value, no error
        assert cache.health()["flags"] == "last known values"
        proc = start()
        redis.Redis.from_url(url).set("flag:hiddenfeature", "off")
        eventually(lambda: not cache.enabled("hiddenfeature"), "the cache catching up",
                   timeout=10)
        assert cache.connected
        cache.close()
    finally:
        proc.terminate()
        proc.wait(5)
