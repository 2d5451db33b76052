"""The dashboard off loopback: plain HTTP only when the operator insists, HTTPS with the
operator's certificate, and the session cookie marked Secure under it."""

from __future__ import annotations

import asyncio
import functools
import os
import ssl
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import aiohttp
import pytest
from aiohttp import web

from cdpipe.dashboard.guards import security_headers, tls_context
from cdpipe.dashboard.server import Dashboard
from cdpipe.dashboard.sessions import COOKIE, LoginThrottle, Sessions
from cdpipe.errors import CdpipeError
from devkit import free_port

PASSWORD = "the-operators-password"


def dashboard_command(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, CDPIPE_HOME=str(tmp_path / "home"))
    return subprocess.run([str(Path(sys.executable).parent / "cdpipe"), "dashboard", *args],
                          env=env, capture_output=True, text=True, timeout=60, check=False)


def test_plain_http_off_loopback_is_refused_before_anything_runs(tmp_path: Path) -> None:
    out = dashboard_command(tmp_path, "--host", "0.0.0.0")
    assert out.returncode == 1
    assert "refusing to serve the dashboard on 0.0.0.0 over plain HTTP" in out.stderr
    assert "--insecure" in out.stderr
    half = dashboard_command(tmp_path, "--tls-cert", str(tmp_path / "c.pem"))
    assert (half.returncode, half.stderr.strip()) == (
        1, "error: give both --tls-cert and --tls-key, or neither")
    # With --insecure it goes on, to the next check (no environment here).
    anyway = dashboard_command(tmp_path, "--host", "0.0.0.0", "--insecure")
    assert anyway.returncode == 1 and "no environment is up here" in anyway.stderr


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj",
                    "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], capture_output=True, check=True)
    return cert, key


async def _login_over(context: ssl.SSLContext, cert: Path) -> tuple[int, str, bool]:
    dashboard = SimpleNamespace(sessions=Sessions(PASSWORD), throttle=LoginThrottle())
    app = web.Application(middlewares=[security_headers])
    app.router.add_post("/api/login", functools.partial(Dashboard.login, dashboard))
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=context).start()
    try:
        trust = ssl.create_default_context(cafile=str(cert))
        async with aiohttp.ClientSession() as client:
            async with client.post(f"https://127.0.0.1:{port}/api/login",
                                   json={"password": PASSWORD}, ssl=trust) as resp:
                cookie = resp.headers.get("Set-Cookie", "")
                status = resp.status
            try:
                async with client.get(f"http://127.0.0.1:{port}/api/login"):
                    plain_answered = True
            except aiohttp.ClientError:
                plain_answered = False
        return status, cookie, plain_answered
    finally:
        await runner.cleanup()


def test_https_with_the_operators_certificate_and_a_secure_cookie(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    context = tls_context("0.0.0.0", cert, key, insecure=False)
    assert context is not None
    status, cookie, plain_answered = asyncio.run(_login_over(context, cert))
    assert status == 200
    assert cookie.startswith(f"{COOKIE}=") and "Secure" in cookie and "HttpOnly" in cookie
    assert not plain_answered


def test_a_certificate_that_cannot_be_read_is_one_line(tmp_path: Path) -> None:
    cert, _ = self_signed(tmp_path)
    with pytest.raises(CdpipeError, match="cannot use the TLS certificate"):
        tls_context("0.0.0.0", cert, tmp_path / "missing-key.pem", insecure=False)
