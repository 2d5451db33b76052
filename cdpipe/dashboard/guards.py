"""What every request to the dashboard passes, and where it may listen.

Every answer carries the security headers, errors included; a request whose Host is
not the dashboard's own is refused (DNS rebinding); actions come only from the page's
own origin; plain HTTP is for loopback only, unless the operator says otherwise.
"""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Awaitable, Callable, Collection
from pathlib import Path

from aiohttp import web

from cdpipe.errors import CdpipeError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' data:; connect-src 'self'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "[::1]"})


def same_origin(request: web.Request) -> bool:
    """No Origin (curl, scripts) or this very origin; a page elsewhere is refused."""
    origin = request.headers.get("Origin")
    return origin is None or origin == f"{request.scheme}://{request.host}"


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The security headers on every answer, errors too (a 404, 405 or 400 is raised,
    not returned, and would pass by without them)."""
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        for name, value in SECURITY_HEADERS.items():
            exc.headers.setdefault(name, value)
        raise
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def served_hosts(host: str, port: int, names: Collection[str] = ()) -> frozenset[str]:
    """The Host headers the dashboard answers beside the loopback names: the address it
    listens on with its port, and the names the operator configured (as given: `name`
    behind a reverse proxy on the default port, `name:port` otherwise)."""
    listening = f"[{host}]" if ":" in host else host
    own = {f"{listening}:{port}"} if host not in ("0.0.0.0", "::") else set()
    return frozenset(name.lower() for name in own | set(names))


def _hostname(host: str) -> str:
    """The name of a Host header without its port ("[::1]:8099" -> "[::1]")."""
    if host.startswith("["):
        return host[: host.find("]") + 1]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def host_guard(allowed: frozenset[str]) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Refuses a request whose Host is not one the dashboard serves. A page elsewhere
    can point its own name at 127.0.0.1 (DNS rebinding onto the operator's SSH tunnel),
    and its requests then carry that name, never a loopback one. Loopback names pass on
    any port: a tunnel picks its own local port."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        host = request.host.lower()
        if _hostname(host) not in LOOPBACK_NAMES and host not in allowed:
            return web.json_response(
                {"error": f"refused: Host {request.host!r} is not this dashboard's "
                          "address (a loopback name, or one given with `cdpipe "
                          "dashboard --allowed-host NAME[:PORT]`)"}, status=421)
        return await handler(request)

    return guard


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def tls_context(host: str, cert: Path | None, key: Path | None,
                insecure: bool) -> ssl.SSLContext | None:
    """The TLS context to serve with; None for plain HTTP, which only loopback gets
    unless the operator says --insecure (the password and the session cookie would
    cross the network in clear)."""
    if (cert is None) != (key is None):
        raise CdpipeError("give both --tls-cert and --tls-key, or neither")
    if cert is None or key is None:
        if not is_loopback(host) and not insecure:
            raise CdpipeError(
                f"refusing to serve the dashboard on {host} over plain HTTP: the operator's "
                "password and session cookie would cross the network in clear; give "
                "--tls-cert and --tls-key (or --insecure to do it anyway)")
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise CdpipeError(f"cannot use the TLS certificate {cert} and key {key}: "
                          f"{getattr(exc, 'strerror', None) or exc}") from None
    return context
