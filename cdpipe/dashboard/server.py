"""The dashboard's web server (aiohttp): the page and its two static files, the state as
JSON, the live feed (WebSocket for the page, Server-Sent Events for scripts), the
operator's login and the actions.

Reads need no login; every action needs the operator's session cookie and the session's
CSRF token in the ``X-CSRF-Token`` header, and a same-origin request. Actions call the
CLI's functions (``cdpipe.controls``) or run the CLI itself (promote, rollback):
there is no second way to change production. No secret reaches the browser: the page
gets instance ids, roles, addresses, commits, flags and the monitor's records."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import ssl
import time
from collections.abc import Awaitable, Callable, Collection
from importlib import resources
from typing import Any

import aiohttp
import redis
from aiohttp import web

from cdpipe import controls, secret_files
from cdpipe.dashboard import actor, view
from cdpipe.dashboard.guards import host_guard, same_origin, security_headers, served_hosts
from cdpipe.dashboard.jobs import COMMANDS, Busy, Jobs
from cdpipe.dashboard.live import Hub, Live, Message, frame, ws_message
from cdpipe.dashboard.sessions import COOKIE, CSRF_HEADER, LoginThrottle, Sessions
from cdpipe.dashboard.source import PageEnvironment, Source
from cdpipe.dashboard.traffic import Reading, TrafficMeter
from cdpipe.errors import CdpipeError
from cdpipe.redis_users import OPERATOR, password_name
from cdpipe_host.haproxy import APP_BACKEND, parse_stats_csv

log = logging.getLogger("cdpipe.dashboard")
STATIC = resources.files("cdpipe.dashboard") / "static"
PAGES = {"/": ("index.html", "text/html"),
         "/dashboard.js": ("dashboard.js", "text/javascript"),
         "/dashboard.css": ("dashboard.css", "text/css")}
FAILED_LOGIN_DELAY = 1.0
HEARTBEAT_SECONDS = 15.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Dashboard:
    def __init__(self, env: PageEnvironment) -> None:
        self.env = env
        self.source = Source(env)
        self.hub = Hub()
        self.sessions = Sessions(secret_files.read(env.settings.secrets_dir,
                                              password_name(OPERATOR)))
        self.throttle = LoginThrottle()
        self.jobs = Jobs(lambda job: self.hub.publish("job", job),
                         actor.command(env.settings) or Jobs.PROGRAM)
        self.meter = TrafficMeter()
        self.live = Live(self.hub, self.source.redis_url, self.source.read, self.traffic,
                         view.SECTIONS, self.source.stale_in)
        self.http: aiohttp.ClientSession | None = None

    # -- background ---------------------------------------------------------------
    async def on_startup(self, _app: web.Application) -> None:
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2))
        self.live.start()

    async def on_shutdown(self, _app: web.Application) -> None:
        for queue in list(self.hub.clients):  # ends every open feed
            self.hub.end(queue)

    async def on_cleanup(self, _app: web.Application) -> None:
        await self.live.stop()
        await self.jobs.close()
        if self.http is not None:
            await self.http.close()

    async def traffic(self) -> dict[str, Any] | None:
        request = self.source.stats_request()
        if request is None or self.http is None:
            return None
        url, password = request
        async with self.http.get(url, auth=aiohttp.BasicAuth("admin", password)) as resp:
            resp.raise_for_status()
            text = await resp.text()
        reading = Reading(time.monotonic(), parse_stats_csv(text, APP_BACKEND))
        return self.meter.add(reading, self.source.roles())

    # -- reads --------------------------------------------------------------------
    async def page(self, request: web.Request) -> web.Response:
        name, kind = PAGES[request.path]
        body = (STATIC / name).read_bytes()
        return web.Response(body=body, content_type=kind, charset="utf-8")

    async def state(self, _request: web.Request) -> web.Response:
        """Every section at once (what the stream sends first), for scripts and curl."""
        try:
            sections = await asyncio.to_thread(self.source.read, set(view.SECTIONS))
        except (CdpipeError, redis.RedisError) as exc:
            return _error(503, str(exc))
        sections["job"] = self.jobs.view()
        return web.json_response(sections)

    def _join(self) -> asyncio.Queue[Message | None]:
        queue = self.hub.join()
        if (job := self.jobs.view()) is not None:
            queue.put_nowait(("job", json.dumps(job, separators=(",", ":"))))
        return queue

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        """The page's live feed: every section as it changes, as WebSocket messages
        (a browser keeps at most six HTTP/1.1 streams per site, and every open tab would
        hold one; WebSockets do not count against that)."""
        if not same_origin(request):
            return _error(403, "refused: the request did not come from this page")
        ws = web.WebSocketResponse(heartbeat=HEARTBEAT_SECONDS)
        await ws.prepare(request)
        queue = self._join()

        async def send() -> None:
            while (message := await queue.get()) is not None:
                await ws.send_str(ws_message(*message))
            await ws.close()  # too slow, or the dashboard stops: the page reconnects

        sender = asyncio.get_running_loop().create_task(send())
        try:
            async for _message in ws:  # the page sends nothing; this ends when it goes
                pass
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionResetError):
                await sender
            self.hub.leave(queue)
        return ws

    async def events(self, request: web.Request) -> web.StreamResponse:
        """The same feed as Server-Sent Events, for curl and scripts."""
        response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream", "Cache-Control": "no-store",
            "X-Accel-Buffering": "no"})
        await response.prepare(request)
        queue = self._join()
        try:
            await response.write(b"retry: 1000\n\n")
            while True:
                try:
                    message = await asyncio.wait_for(queue.get(), HEARTBEAT_SECONDS)
                except TimeoutError:
                    await response.write(b": heartbeat\n\n")
                    continue
                if message is None:
                    break
                await response.write(frame(*message))
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.hub.leave(queue)
        return response

    async def session(self, request: web.Request) -> web.Response:
        current = self.sessions.get(request.cookies.get(COOKIE))
        return web.json_response({"logged_in": current is not None,
                                  "csrf": current.csrf if current else None,
                                  "login_possible": self.sessions.password is not None})

    # -- login ----------------------------------------------------------------------
    async def login(self, request: web.Request) -> web.Response:
        if not same_origin(request):
            return _error(403, "refused: the request did not come from this page")
        body = await _json(request)
        client = request.remote or "unknown"
        wait = self.throttle.wait_seconds(client)
        if wait > 0:
            response = _error(429, f"too many failed logins; try again in {wait:.0f} s")
            response.headers["Retry-After"] = str(max(1, round(wait)))
            return response
        session_id = self.sessions.login(str(body.get("password", "")))
        if session_id is None:
            self.throttle.failed(client)
            await asyncio.sleep(FAILED_LOGIN_DELAY)
            if self.sessions.password is None:
                return _error(403, "no operator password in the secrets directory; run "
                                   "`cdpipe up` first")
            return _error(403, "wrong password (the operator's: secrets/"
                               f"{password_name(OPERATOR)})")
        self.throttle.succeeded(client)
        current = self.sessions.get(session_id)
        assert current is not None
        response = web.json_response({"logged_in": True, "csrf": current.csrf})
        response.set_cookie(COOKIE, session_id, httponly=True, samesite="Strict", path="/",
                            secure=request.secure)
        return response

    async def logout(self, request: web.Request) -> web.Response:
        if not same_origin(request):  # a page elsewhere may not end the operator's session
            return _error(403, "refused: the request did not come from this page")
        self.sessions.logout(request.cookies.get(COOKIE))
        response = web.json_response({"logged_in": False})
        response.del_cookie(COOKIE, path="/")
        return response

    # -- actions --------------------------------------------------------------------
    def action(self, handler: Callable[[dict[str, Any]], Awaitable[str]]) -> Handler:
        """A handler behind the login, the CSRF token and the same-origin check; it
        answers {"message": ...} or {"error": ...} with the CLI's own words."""

        async def guarded(request: web.Request) -> web.Response:
            if not same_origin(request):
                return _error(403, "refused: the request did not come from this page")
            if not self.sessions.allows(request.cookies.get(COOKIE),
                                        request.headers.get(CSRF_HEADER)):
                return _error(401, "log in as the operator first (or reload the page: "
                                   "the session expired)")
            try:
                message = await handler(await _json(request))
            except BadInput as exc:
                return _error(400, str(exc))
            except Busy as exc:
                return _error(409, str(exc))
            except CdpipeError as exc:
                return _error(503, str(exc))
            log.info("action %s: %s", request.path, message)
            return web.json_response({"message": message})

        return guarded

    async def _redis_write(self, fn: Callable[[redis.Redis], str]) -> str:
        return await asyncio.to_thread(lambda: fn(self.source.client()))

    async def set_flag(self, body: dict[str, Any]) -> str:
        name, value = str(body.get("name", "")), str(body.get("value", ""))
        _checked(lambda: controls.check_flag(name, value))
        stored = await self._redis_write(lambda r: controls.set_flag(r, name, value))
        return f"flag:{name} = {stored}"

    async def delete_flag(self, body: dict[str, Any]) -> str:
        name = str(body.get("name", ""))
        _checked(lambda: controls.check_flag(name, "off"))
        existed = await asyncio.to_thread(
            lambda: controls.delete_flag(self.source.client(), name))
        return f"flag:{name} deleted (reads as off)" if existed else f"flag:{name} was not set"

    async def set_weight(self, body: dict[str, Any]) -> str:
        raw = str(body.get("weight", ""))
        _checked(lambda: controls.check_weight(raw))
        weight = await asyncio.to_thread(
            lambda: controls.set_weight(self.source.client(), raw))
        return f"canary:weight = {weight}"

    async def set_alert(self, body: dict[str, Any]) -> str:
        on = body.get("on")
        if not isinstance(on, bool):
            raise BadInput('the kill switch takes {"on": true} or {"on": false}')
        await asyncio.to_thread(lambda: controls.set_alert(self.source.client(), on))
        return ("canary:alert = on (the canary receives no traffic)" if on
                else "canary:alert = off")

    async def run_job(self, body: dict[str, Any]) -> str:
        name = str(body.get("job", ""))
        if name not in COMMANDS:
            raise BadInput(f"unknown action {name!r}: use promote or rollback")
        job = self.jobs.start(name)
        return f"{job['command']} started"

    def routes(self, app: web.Application) -> None:
        for path in PAGES:
            app.router.add_get(path, self.page)
        app.router.add_get("/api/state", self.state)
        app.router.add_get("/api/session", self.session)
        app.router.add_get("/events", self.events)
        app.router.add_get("/ws", self.websocket)
        app.router.add_post("/api/login", self.login)
        app.router.add_post("/api/logout", self.logout)
        app.router.add_post("/api/flag", self.action(self.set_flag))
        app.router.add_post("/api/flag/delete", self.action(self.delete_flag))
        app.router.add_post("/api/canary/weight", self.action(self.set_weight))
        app.router.add_post("/api/canary/alert", self.action(self.set_alert))
        app.router.add_post("/api/canary/job", self.action(self.run_job))


class BadInput(Exception):
    """The request's input is refused (400), with the CLI's message."""


def _checked(check: Callable[[], object]) -> None:
    try:
        check()
    except CdpipeError as exc:
        raise BadInput(str(exc)) from None


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def _json(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text='{"error": "the body is not JSON"}',
                                 content_type="application/json") from None
    return body if isinstance(body, dict) else {}


def create_app(env: PageEnvironment, allowed_hosts: frozenset[str]) -> web.Application:
    dashboard = Dashboard(env)
    app = web.Application(middlewares=[security_headers, host_guard(allowed_hosts)],
                          client_max_size=64 * 1024)
    dashboard.routes(app)
    app.on_startup.append(dashboard.on_startup)
    app.on_shutdown.append(dashboard.on_shutdown)
    app.on_cleanup.append(dashboard.on_cleanup)
    app["dashboard"] = dashboard
    return app


def serve(env: PageEnvironment, host: str, port: int, ready: Callable[[str], None],
          allowed_hosts: Collection[str] = (), tls: ssl.SSLContext | None = None) -> None:
    """Serves until interrupted; ``ready`` gets the URL once the port listens."""

    async def main() -> None:
        app = create_app(env, served_hosts(host, port, allowed_hosts))
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=2)
        await runner.setup()
        site = web.TCPSite(runner, host, port, ssl_context=tls)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise CdpipeError(f"cannot listen on {host}:{port} ({exc.strerror}); pick "
                              "another with --port") from None
        shown_host = f"[{host}]" if ":" in host else host
        ready(f"{'https' if tls else 'http'}://{shown_host}:{port}/")
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    asyncio.run(main())
