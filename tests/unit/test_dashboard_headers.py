"""The dashboard's guards: the security headers on every answer, its errors too (a 404
of a path it does not serve, a 405 of a method a route does not take, a 400 it raises);
its logout, like every other change, only from its own page; only its own names as Host
(DNS rebinding); failed logins counted per client and in total."""

from __future__ import annotations

import asyncio
import functools
from types import SimpleNamespace

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from cdpipe.dashboard import server, sessions
from cdpipe.dashboard.guards import SECURITY_HEADERS, host_guard, security_headers, served_hosts
from cdpipe.dashboard.server import COOKIE, Dashboard
from cdpipe.dashboard.sessions import CLIENT_FAILURES, LoginThrottle, Sessions


async def _bad(_request: web.Request) -> web.Response:
    raise web.HTTPBadRequest(text="bad input")


async def _ok(_request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def _answers() -> dict[str, tuple[int, dict[str, str]]]:
    app = web.Application(middlewares=[security_headers])
    app.router.add_get("/ok", _ok)
    app.router.add_post("/bad", _bad)
    async with TestClient(TestServer(app)) as client:
        seen = {}
        for name, method, path in (("ok", "GET", "/ok"), ("404", "GET", "/nowhere"),
                                   ("405", "GET", "/bad"), ("400", "POST", "/bad")):
            resp = await client.request(method, path)
            seen[name] = (resp.status, dict(resp.headers))
        return seen


def test_every_answer_carries_the_security_headers() -> None:
    seen = asyncio.run(_answers())
    assert {name: status for name, (status, _) in seen.items()} == {
        "ok": 200, "404": 404, "405": 405, "400": 400}
    for name, (_, headers) in seen.items():
        for header, value in SECURITY_HEADERS.items():
            assert headers.get(header) == value, (name, header)


async def _logouts() -> tuple[int, bool, int, bool]:
    book = Sessions("the-operators-password")
    session_id = book.login("the-operators-password")
    assert session_id is not None
    dashboard = SimpleNamespace(sessions=book)  # all that logout uses of the Dashboard
    app = web.Application(middlewares=[security_headers])
    app.router.add_post("/api/logout", functools.partial(Dashboard.logout, dashboard))
    async with TestClient(TestServer(app)) as client:
        cookies = {COOKIE: session_id}
        foreign = await client.post("/api/logout", cookies=cookies,
                                    headers={"Origin": "http://elsewhere.example"})
        after_foreign = book.get(session_id) is not None
        own = await client.post("/api/logout", cookies=cookies,
                                headers={"Origin": str(client.make_url("")).rstrip("/")})
        return foreign.status, after_foreign, own.status, book.get(session_id) is not None


def test_a_page_elsewhere_cannot_log_the_operator_out() -> None:
    foreign, kept, own, still = asyncio.run(_logouts())
    assert (foreign, kept) == (403, True)
    assert (own, still) == (200, False)


async def _by_host(allowed: frozenset[str], hosts: list[str]) -> dict[str, tuple[int, bool]]:
    app = web.Application(middlewares=[security_headers, host_guard(allowed)])
    app.router.add_get("/api/state", _ok)
    async with TestClient(TestServer(app)) as client:
        seen = {}
        for host in hosts:
            resp = await client.get("/api/state", headers={"Host": host})
            seen[host] = (resp.status, all(resp.headers.get(name) == value
                                           for name, value in SECURITY_HEADERS.items()))
        return seen


def test_only_the_dashboards_own_names_are_answered() -> None:
    """DNS rebinding: a page whose name now points at 127.0.0.1 sends its own name as
    Host; only loopback names (any port: a tunnel's local port), the listening address
    with its port and configured names are answered."""
    allowed = served_hosts("127.0.0.1", 8099, ["dash.example.org"])
    seen = asyncio.run(_by_host(allowed, [
        "127.0.0.1:8099", "localhost:41999", "[::1]:8099", "LOCALHOST:8099",
        "dash.example.org", "rebound.example.net:8099", "127.0.0.1.rebound.example.net",
        "localhost.rebound.example.net:8099", "dash.example.org:8099"]))
    assert {host: status for host, (status, _) in seen.items()} == {
        "127.0.0.1:8099": 200, "localhost:41999": 200, "[::1]:8099": 200,
        "LOCALHOST:8099": 200, "dash.example.org": 200, "rebound.example.net:8099": 421,
        "127.0.0.1.rebound.example.net": 421, "localhost.rebound.example.net:8099": 421,
        "dash.example.org:8099": 421}
    assert all(headers for _, headers in seen.values())  # refusals carry them too

    on_address = served_hosts("10.0.0.5", 8099)
    seen = asyncio.run(_by_host(on_address, ["10.0.0.5:8099", "10.0.0.5:9000"]))
    assert {host: status for host, (status, _) in seen.items()} == {
        "10.0.0.5:8099": 200, "10.0.0.5:9000": 421}


async def _parallel_logins(wrong: int) -> tuple[list[int], int, str | None]:
    book = Sessions("the-operators-password")
    dashboard = SimpleNamespace(sessions=book, throttle=LoginThrottle())
    app = web.Application(middlewares=[security_headers])
    app.router.add_post("/api/login", functools.partial(Dashboard.login, dashboard))
    async with TestClient(TestServer(app)) as client:
        answers = await asyncio.gather(*(
            client.post("/api/login", json={"password": f"guess-{n}"}) for n in range(wrong)))
        right = await client.post("/api/login", json={"password": "the-operators-password"})
        return ([a.status for a in answers], right.status, right.headers.get("Retry-After"))


def test_parallel_wrong_logins_are_counted_not_just_delayed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A delay per failed login is passed by sending many at once; the count is not:
    after CLIENT_FAILURES failures the client is refused (429, Retry-After) without its
    password being checked, the right one included."""
    monkeypatch.setattr(server, "FAILED_LOGIN_DELAY", 0.05)
    statuses, right, retry_after = asyncio.run(_parallel_logins(CLIENT_FAILURES + 3))
    assert sorted(statuses) == [403] * CLIENT_FAILURES + [429] * 3
    assert right == 429 and retry_after is not None and int(retry_after) > 0


def test_failed_logins_count_per_client_and_in_total(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(sessions.time, "monotonic", lambda: now[0])
    throttle = LoginThrottle(per_client=2, total=3, window=60)
    throttle.failed("10.0.0.1")
    assert throttle.wait_seconds("10.0.0.1") == 0
    throttle.failed("10.0.0.1")
    assert throttle.wait_seconds("10.0.0.1") == 60  # this client is done for a window
    assert throttle.wait_seconds("10.0.0.2") == 0  # another is not...
    throttle.failed("10.0.0.2")
    assert throttle.wait_seconds("10.0.0.3") == 60  # ...until all together reach the total
    now[0] += 30
    assert throttle.wait_seconds("10.0.0.3") == 30
    now[0] += 30
    assert throttle.wait_seconds("10.0.0.1") == 0  # the window slid past the failures
    throttle.failed("10.0.0.1")
    throttle.failed("10.0.0.1")
    throttle.succeeded("10.0.0.1")  # the password, once it may be tried, clears the count
    assert throttle.wait_seconds("10.0.0.1") == 0
