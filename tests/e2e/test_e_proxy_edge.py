"""The proxy's edge, end to end on a whole local environment (real HAProxy, gunicorn,
Redis) whose CDPIPE_HOME is longer than a UNIX socket path may be: only public routes
go through, clients choose neither their user id nor their server, slow clients are
cut off, and a request to a server that just died is answered by another one.
"""

from __future__ import annotations

import select
import socket
import stat
import time
from collections.abc import Iterator

import pytest
import redis
import requests

from cdpipe import socket_dir
from cdpipe_host.edge import USER_COOKIE, verified_user_id
from tests.e2e.conftest import LocalEnv, make_env
from tests.e2e.load import APP_CONCURRENCY, Load, count_requests, failed, split_failures
from tests.e2e.observe import (
    reset_runtime,
    user_cookie,
    wait_answers,
    wait_held_out,
    wait_in_rotation,
    wait_synced,
    wait_weights,
)
from tests.support import kill_tree, wait_until

SUN_PATH_MAX = 108  # bytes of sockaddr_un.sun_path, its NUL included
SERVER_COOKIE = "CDPIPE_SERVER"  # proxy_cookie_name


@pytest.fixture(scope="module")
def edge_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalEnv]:
    """A whole environment under a CDPIPE_HOME no socket path could live in."""
    root = tmp_path_factory.mktemp("edge") / ("a-jenkins-workspace-of-some-job@2-" + "x" * 90)
    env = make_env(root)
    assert len(str(env.home / "instances" / "proxy-1" / "supervisor.sock")) > SUN_PATH_MAX
    try:
        env.cdpipe("up", "--ref", env.new)
        yield env
    finally:
        env.cdpipe("down", check=False)


@pytest.fixture
def edge(edge_env: LocalEnv) -> Iterator[LocalEnv]:
    """The environment as `up` left it (no flag, no alert, default weight), before and
    after each test."""
    reset_runtime(edge_env)
    yield edge_env
    reset_runtime(edge_env)


@pytest.fixture
def r(edge: LocalEnv) -> redis.Redis:
    return edge.redis()


def app_urls(env: LocalEnv) -> list[str]:
    return [env.url(2), env.url(3)]  # prod-1, canary-1


# -- sockets --------------------------------------------------------------------------
def test_sockets_live_in_a_short_private_runtime_directory(edge: LocalEnv) -> None:
    run = socket_dir.default_for(edge.home)
    assert stat.S_IMODE(run.stat().st_mode) == 0o700
    sockets = {p.relative_to(run).as_posix() for p in run.rglob("*")
               if stat.S_ISSOCK(p.lstat().st_mode)}
    assert {"proxy-1/supervisor.sock", "proxy-1/haproxy.sock", "redis-1/supervisor.sock",
            "prod-1/supervisor.sock", "canary-1/supervisor.sock"} <= sockets
    under_home = [p for p in edge.home.rglob("*") if stat.S_ISSOCK(p.lstat().st_mode)]
    assert under_home == []
    assert "RUNNING" in edge.supervisorctl("proxy-1", "status", "haproxy")


# -- public routes only ---------------------------------------------------------------
def test_private_routes_are_refused_through_the_proxy(edge: LocalEnv, r: redis.Redis) -> None:
    r.set("flag:cpuburn", "on")
    wait_answers(app_urls(edge), "/burn?ms=1", 200)  # the flag is in force on every app
    direct = edge.url(2)
    assert "app_requests_total" in requests.get(direct + "/metrics", timeout=5).text
    for path in ("/metrics", "/burn?ms=1", "/metrics/", "//metrics", "/%6detrics",
                 "/burn/", "/nothing-here"):
        resp = requests.get(edge.proxy_url + path, timeout=5)
        assert resp.status_code == 404, path
        assert resp.json() == {"error": "not found"}, path
    public = requests.get(edge.proxy_url + "/healthz", timeout=5)
    assert public.status_code == 200
    details = requests.get(direct + "/healthz", timeout=5).json()
    assert details["version"] == edge.new
    assert edge.new not in public.text and "redis" not in public.text
    assert requests.get(edge.proxy_url + "/", timeout=5).status_code == 200


# -- the user id ----------------------------------------------------------------------
def test_a_user_header_is_not_trusted(edge: LocalEnv) -> None:
    resp = requests.get(edge.proxy_url + "/greeting", headers={"X-User-Id": "alice"},
                        timeout=5)
    assert resp.json()["user"] != "alice"
    forged = requests.get(edge.proxy_url + "/greeting", cookies={USER_COOKIE: "alice"},
                          timeout=5)
    assert forged.json()["user"] != "alice"
    assert forged.cookies.get(USER_COOKIE, "").startswith(forged.json()["user"] + ".")


def test_a_signed_cookie_keeps_a_users_bucket(edge: LocalEnv, r: redis.Redis) -> None:
    since = time.monotonic()
    r.set("flag:new-greeting", "50%")
    wait_synced(app_urls(edge), since)
    with requests.Session() as session:
        first = session.get(edge.proxy_url + "/greeting", timeout=5).json()
        cookie = session.cookies.get(USER_COOKIE)
        secret = (edge.home / "secrets" / "app_user_id_secret").read_text().strip()
        assert verified_user_id(secret, cookie) == first["user"]
        answers = []
        for _ in range(30):
            session.cookies.set(SERVER_COOKIE, None)  # any server each time
            answers.append(session.get(edge.proxy_url + "/greeting", timeout=5).json())
    # Both instances (prod and canary share the secret) know the user the same way.
    for url in app_urls(edge):
        answers.append(requests.get(url + "/greeting", cookies={USER_COOKIE: cookie},
                                    timeout=5).json())
    assert {(a["user"], a["variant"]) for a in answers} == {(first["user"], first["variant"])}
    # The bucket is the user's: across many users both variants come up.
    variants = {requests.get(edge.proxy_url + "/greeting", cookies=user_cookie(edge, f"u{n}"),
                             timeout=5).json()["variant"] for n in range(40)}
    assert variants == {"new", "classic"}


# -- the persistence cookie -----------------------------------------------------------
def canary_cookie(env: LocalEnv) -> str:
    """The persistence cookie HAProxy gives a user it sends to the canary."""
    with requests.Session() as session:
        def to_canary() -> bool:
            session.cookies.clear()
            return bool(session.get(env.proxy_url + "/", timeout=5).json()["role"] == "canary")
        wait_until(to_canary, 30, "a new user sent to the canary", interval=0)
        value = session.cookies.get(SERVER_COOKIE)
    assert value
    return str(value)


def roles_with(env: LocalEnv, cookies: dict[str, str], n: int = 40) -> list[str]:
    return [requests.get(env.proxy_url + "/", cookies=cookies, timeout=5).json()["role"]
            for _ in range(n)]


def test_the_persistence_cookie_is_opaque(edge: LocalEnv, r: redis.Redis) -> None:
    real = canary_cookie(edge)
    assert "canary" not in real and "prod" not in real
    assert set(roles_with(edge, {SERVER_COOKIE: real})) == {"canary"}  # it does pin
    # A client naming the canary is balanced like anyone: not pinned to it.
    forged = roles_with(edge, {SERVER_COOKIE: "canary-1"}, n=60)
    assert "prod" in forged and forged.count("canary") < 40
    # The kill switch: clients holding the canary's real cookie get no canary either.
    r.set("canary:alert", "on")
    wait_held_out(edge, "canary-1")
    assert set(roles_with(edge, {SERVER_COOKIE: real})) == {"prod"}
    r.set("canary:alert", "off")
    wait_weights(edge, r, 33)
    assert canary_cookie(edge) == real  # the same value after the change


# -- slow clients and dying servers ---------------------------------------------------
def test_a_client_sending_headers_slowly_is_cut_off(edge: LocalEnv) -> None:
    """One header line every 0.5 s, 120 of them (a minute): HAProxy answers 408 and
    closes once timeout http-request has passed, long before the client is done."""
    port = edge.port_base
    received = b""
    sent_lines = 0
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: edge\r\n")
        closed = False
        while sent_lines < 120 and not closed:
            readable, _, _ = select.select([sock], [], [], 0.5)
            if readable:
                chunk = sock.recv(4096)
                received += chunk
                closed = not chunk
                continue
            try:
                sock.sendall(f"X-Slow-{sent_lines}: y\r\n".encode())
            except (BrokenPipeError, ConnectionResetError):
                closed = True
            sent_lines += 1
    assert closed, f"still open after {sent_lines} header lines"
    assert sent_lines < 120
    assert received.startswith(b"HTTP/1.1 408"), received[:80]


def test_requests_to_a_killed_server_are_answered_by_another(edge: LocalEnv) -> None:
    pid = int(edge.supervisorctl("prod-1", "pid", "app"))
    with Load(edge.proxy_url + "/", threads=6, max_seconds=90) as load:
        wait_until(lambda: len(load.since(0)) >= 200, 30, "200 answers through the proxy")
        killed = time.monotonic()
        kill_tree(pid)
        dead = time.monotonic()

        def back() -> bool:
            new = edge.supervisorctl("prod-1", "pid", "app")
            return new.isdigit() and int(new) not in (0, pid)
        wait_until(back, 30, "prod-1's gunicorn restarted by its supervisor", interval=0.1)
        wait_in_rotation(edge, "prod-1", timeout=60)
        again = time.monotonic()
        wait_until(lambda: len(load.since(again)) >= 200, 30,
                   "200 answers after prod-1 came back")
    during = [s for s in load.since(killed) if s.started < again]
    assert during, "no request was made while prod-1 was down"
    cut_off, others = split_failures(load, dead)
    assert others == [], failed(load)
    assert len(cut_off) <= APP_CONCURRENCY, failed(load)
    assert {s.role for s in count_requests(edge.proxy_url + "/", 60)} == {"prod", "canary"}
