"""A restarted app server accepts no connection it cannot serve at once: gunicorn, run
with the app role's own command line, binds its port only once the app is loaded, so a
request the proxy routes to it the moment it listens is answered at once instead of
waiting in the port's backlog while a worker imports the app."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import jinja2
import yaml

from cdpipe import PROJECT_ROOT
from devkit import free_port

IMPORT_SECONDS = 3.0  # how long the stand-in app takes to load (a slow import)
SLOW_APP = f"""\
import time
time.sleep({IMPORT_SECONDS})

def create_app():
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]
    return app
"""


def role_command(tmp_path: Path, port: int) -> list[str]:
    """The app role's gunicorn command line, rendered with this test's paths."""
    source = yaml.safe_load((PROJECT_ROOT / "roles" / "app" / "vars" / "main.yml").read_text())
    line = jinja2.Environment(undefined=jinja2.StrictUndefined).from_string(
        source["app_service_command"]).render(
        app_root=tmp_path, app_bind_address="127.0.0.1", app_port=port, app_workers=1,
        app_threads=2)
    args = line.split()
    args[0] = str(Path(sys.executable).parent / "gunicorn")  # current/.venv's stand-in
    args[args.index("--config") + 1] = str(tmp_path / "gunicorn.conf.py")
    return args


def test_the_port_answers_as_soon_as_it_accepts(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(SLOW_APP)
    (tmp_path / "gunicorn.conf.py").write_text("")
    port = free_port()
    started = time.monotonic()
    proc = subprocess.Popen(role_command(tmp_path, port), cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:  # the first moment the port accepts a connection
            assert proc.poll() is None, "gunicorn exited"
            assert time.monotonic() - started < 60, "the port never accepted"
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    accepted = time.monotonic()
                    sock.settimeout(30)
                    sock.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
                    answer = sock.recv(64)
                    break
            time.sleep(0.02)
        assert answer.startswith(b"HTTP/1.0 200") or answer.startswith(b"HTTP/1.1 200")
        # Loaded before it listened: nothing accepted a connection during the import.
        # (Without --preload the port accepts within a fraction of a second and the
        # request then waits out the import in the backlog.)
        assert accepted - started >= IMPORT_SECONDS, accepted - started
    finally:
        proc.terminate()
        proc.wait(20)
