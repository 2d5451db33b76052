"""The proxy role's HAProxy configuration, rendered from its template and defaults with
the controller's server lines, run as a real HAProxy in front of real HTTP servers:
what happens to requests in flight on a server that is killed, and to a slow client.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import jinja2
import pytest
import requests

from cdpipe import PROJECT_ROOT
from cdpipe_host.haproxy import HAProxyError, HAProxyRuntime
from cdpipe_host.proxy.desired import Desired, Server
from cdpipe_host.proxy.render import render
from devkit import free_port
from devkit.roles import role_defaults
from tests.support import wait_until

ROLE = PROJECT_ROOT / "roles" / "proxy"
# An HTTP server that takes 0.3 s per request (so requests are in flight when it dies)
# and answers its name; /healthz at once. In mode "junk" it answers other paths with
# half a status line and header, then closes (a server dying while it writes them).
SLOW_SERVER = """
import sys, time
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path != "/healthz":
            time.sleep(0.3)
            if sys.argv[3] == "junk":
                self.wfile.write(b"HTTP/1.1 200 OK\\r\\nContent-Le")
                self.close_connection = True
                return
        body = sys.argv[1].encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[2])), Handler).serve_forever()
"""


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def haproxy_config(frontend_port: int, stats_port: int, sock: str,
                   servers: dict[str, str], **overrides: str) -> str:
    """haproxy.cfg as the role and the controller write it (role defaults, the local
    provider's addresses, a test key)."""
    defaults = role_defaults("proxy")
    variables = defaults | {
        "ansible_managed": "test", "proxy_bind_address": "127.0.0.1",
        "proxy_frontend_port": frontend_port, "proxy_stats_port": stats_port,
        "proxy_stats_password": "test", "proxy_socket": sock, "proxy_user": "",
    } | overrides
    template = (ROLE / "templates" / "haproxy.base.cfg.j2").read_text(encoding="utf-8")
    base = jinja2.Environment(keep_trailing_newline=True).from_string(template).render(
        variables)
    desired = Desired(servers={n: Server(n, a, "prod") for n, a in servers.items()})
    return render(base, desired.servers, desired, "test-key")


class Rig:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.servers: dict[str, subprocess.Popen[bytes]] = {}
        self.ports: dict[str, int] = {}
        self.haproxy: subprocess.Popen[bytes] | None = None

    def start_server(self, name: str, port: int, mode: str = "") -> None:
        self.servers[name] = subprocess.Popen([sys.executable, "-c", SLOW_SERVER, name,
                                               str(port), mode], stderr=subprocess.DEVNULL)
        wait_until(lambda: listening(port), 10, f"server {name} listening")

    def start_haproxy(self, junk: str = "", **overrides: str) -> None:
        """Servers a and b behind HAProxy, both up; ``junk`` names one that answers
        junk."""
        self.ports = {name: free_port() for name in ("a", "b")}
        for name, port in self.ports.items():
            self.start_server(name, port, "junk" if name == junk else "")
        cfg = self.root / "haproxy.cfg"
        self.stats_port = free_port()
        cfg.write_text(haproxy_config(self.port, self.stats_port, str(self.root / "h.sock"),
                                      {n: f"127.0.0.1:{p}" for n, p in self.ports.items()},
                                      **overrides))
        self.haproxy = subprocess.Popen(["haproxy", "-db", "-f", str(cfg)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: listening(self.port), 10, "HAProxy listening")
        wait_until(lambda: self.up() == {"a", "b"}, 15, "both servers up in HAProxy")

        def both_answer() -> bool:  # new clients each time (no persistence cookie)
            seen = {requests.get(f"http://127.0.0.1:{self.port}/", timeout=5).text
                    for _ in range(4)}
            return seen == {"a", "b"}
        if not junk:
            wait_until(both_answer, 15, "HAProxy sending requests to both servers")

    def up(self) -> set[str]:
        """The servers HAProxy holds up now (its runtime API)."""
        try:
            stats = HAProxyRuntime(str(self.root / "h.sock")).stats()
        except HAProxyError:
            return set()
        return {name for name, row in stats.items() if row.status.startswith("UP")}

    def get(self, timeout: float = 5) -> requests.Response:
        """One GET through HAProxy as a new user."""
        return requests.get(f"http://127.0.0.1:{self.port}/", timeout=timeout)

    def stop(self) -> None:
        for proc in [*self.servers.values(), self.haproxy]:
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)


@pytest.fixture
def rig() -> Iterator[Rig]:
    with tempfile.TemporaryDirectory(prefix="edge-") as root:  # short: a socket lives here
        rig = Rig(Path(root))
        try:
            yield rig
        finally:
            rig.stop()


def load_while_killing(rig: Rig) -> tuple[Counter[str], int]:
    """8 clients for 3 s; server a is killed (SIGKILL) after 1 s, with requests on it."""
    answers: Counter[str] = Counter()
    failed = 0
    lock = threading.Lock()

    def client() -> None:
        nonlocal failed
        deadline = time.monotonic() + 3
        with requests.Session() as session:
            while time.monotonic() < deadline:
                try:
                    resp = session.get(f"http://127.0.0.1:{rig.port}/", timeout=10)
                    ok, text = resp.status_code == 200, resp.text
                except requests.RequestException:
                    ok, text = False, ""
                with lock:
                    if ok:
                        answers[text] += 1
                    else:
                        failed += 1
    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(1)  # pacing of the scenario: a has requests in flight by now
    rig.servers["a"].kill()
    for t in threads:
        t.join()
    return answers, failed


def test_requests_in_flight_on_a_killed_server_are_answered_by_another(rig: Rig) -> None:
    rig.start_haproxy()
    answers, failed = load_while_killing(rig)
    assert answers["a"] > 0 and answers["b"] > 0
    assert failed == 0


def test_without_retries_on_empty_responses_they_would_fail(rig: Rig) -> None:
    """The same kill with HAProxy's default retry-on: the requests in flight fail, which
    is what the role's setting prevents (and shows this test can see it)."""
    rig.start_haproxy(proxy_retry_on="conn-failure")
    _answers, failed = load_while_killing(rig)
    assert failed > 0


def test_a_slow_client_is_answered_408_and_cut_off(rig: Rig) -> None:
    rig.start_haproxy(proxy_timeout_http_request="1s")
    with socket.create_connection(("127.0.0.1", rig.port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: edge\r\n")
        sock.settimeout(0.2)
        received = b""
        for n in range(100):  # a header line every 0.2 s: 20 s in all
            try:
                chunk = sock.recv(4096)
            except TimeoutError:
                sock.sendall(f"X-Slow-{n}: y\r\n".encode())
                continue
            received += chunk
            if not chunk:
                break
    assert received.startswith(b"HTTP/1.1 408"), received[:80]
    assert n < 99


def test_half_a_response_head_is_retried_on_another_server(rig: Rig) -> None:
    """Server a (up: its checks pass) answers requests with half a header and closes:
    HAProxy sends each again to b, so the client sees none of it. HAProxy reads a head
    cut off mid-way either as a closed connection (`empty-response`) or as a response it
    cannot parse (`junk-response`); with `empty-response` alone, CI run 11 got one 502
    in 12, so the role retries on both. With conn-failure alone the client gets 502."""
    rig.start_haproxy(junk="a")
    answers = [rig.get() for _ in range(12)]
    assert [(a.status_code, a.text) for a in answers] == [(200, "b")] * 12, (
        f"servers up in HAProxy after: {sorted(rig.up())}")
    assert rig.up() == {"a", "b"}  # a stayed in rotation: the requests did reach it


def test_a_server_that_refused_a_connection_gets_nothing_until_its_checks_pass(
        rig: Rig) -> None:
    """a dies; the next requests find its port closed (retried on b). Then its restarted
    process binds the port but has not loaded its app (a listen backlog nobody
    accepts from). Marked down at the first refused connection, a gets none of the
    requests that follow, where each would otherwise wait out the client's timeout."""
    rig.start_haproxy()
    rig.servers["a"].kill()
    rig.servers["a"].wait(10)
    assert [rig.get().text for _ in range(4)] == ["b"] * 4
    with socket.socket() as loading:
        loading.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        loading.bind(("127.0.0.1", rig.ports["a"]))
        loading.listen(64)
        answers = [rig.get(timeout=3) for _ in range(10)]
        assert [(a.status_code, a.text) for a in answers] == [(200, "b")] * 10
        assert "a" not in rig.up()


def test_the_judge_sees_the_502s_haproxy_answers_itself(rig: Rig, tmp_path: Path) -> None:
    """Server a answers junk, which HAProxy turns into 502s (no retry here): the app's
    own counters would show no error at all. The monitor reads HAProxy's stats page
    (monitoring.proxy_stats, with the page's password) and the judge, given a as the
    canary with a clean app count, fails it on HAProxy's count."""
    import asyncio

    from monitoring import proxy_stats
    from monitoring.canary_judge import Judge
    from monitoring.config import CanaryJudge, ProxyStats
    from monitoring.scrape import Sample

    rig.start_haproxy(junk="a", proxy_retry_on="conn-failure")
    password = tmp_path / "stats_password"
    password.write_text("test\n")
    page = ProxyStats(url=f"http://127.0.0.1:{rig.stats_port}/;csv",
                      password_file=str(password))
    before = asyncio.run(proxy_stats.read(page, 5))
    assert before is not None and set(before) == {"a", "b"}
    codes = [rig.get().status_code for _ in range(60)]
    assert 502 in codes and 200 in codes
    after = asyncio.run(proxy_stats.read(page, 5))
    # Not among the server's own 5xx: HAProxy counts them as its response errors.
    assert after is not None and after["a"].failed >= codes.count(502)

    def app_says(name: str, role: str, requests: float) -> Sample:
        sample = Sample(name, role, ok=True)  # the app's counters: no 5xx
        sample.series = [("app_requests_total", {"route": "/", "status": "200"}, requests)]
        return sample
    judge = Judge(CanaryJudge(min_requests=5))
    judge.observe([app_says("a", "canary", 0), app_says("b", "prod", 0)], now=0.0,
                  proxy=before)
    verdict = judge.observe([app_says("a", "canary", 0),
                             app_says("b", "prod", codes.count(200))], now=1.0, proxy=after)
    assert verdict.decided and verdict.failed and "5xx" in verdict.reason
    assert verdict.canary.error_rate == 1.0
    wrong = ProxyStats(url=page.url, password_file=str(tmp_path / "none"))
    assert asyncio.run(proxy_stats.read(wrong, 5)) is None  # said once in the log
