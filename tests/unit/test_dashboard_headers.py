"""The dashboard's security headers are on every answer, its errors too: a 404 of a
path it does not serve, a 405 of a method a route does not take, a 400 it raises; and
its logout, like every other change, only from its own page."""

from __future__ import annotations

import asyncio
import functools
from types import SimpleNamespace

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from cdpipe.dashboard.server import COOKIE, SECURITY_HEADERS, Dashboard, _headers
from cdpipe.dashboard.sessions import Sessions


async def _bad(_request: web.Request) -> web.Response:
    raise web.HTTPBadRequest(text="bad input")


async def _ok(_request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def _answers() -> dict[str, tuple[int, dict[str, str]]]:
    app = web.Application(middlewares=[_headers])
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
    app = web.Application(middlewares=[_headers])
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
