"""Hostile input against the smallest real set of components on its path: a real
redis-server, HAProxy (master-worker) driven by the proxy controller process, the
monitor process, the SMTP sink process and one app-like backend; and the real `cdpipe`
command line.

What is written straight into Redis (server entries with line breaks, control
characters, bytes that are not UTF-8, 1 MB names and addresses; 1 MB flag values and
flag names with escape sequences; junk in the mail outbox) is skipped and logged once:
the monitor and the controller keep running (their pids unchanged over several polls)
and the monitor's mail for a real alert still arrives. Every malformed command line
and rules file ends in one line on stderr and a non-zero exit, with nothing applied.
Self-contained: every fixture is in this file.
"""

from __future__ import annotations

import json
import mailbox
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import redis
import requests

from cdpipe_host.keys import (
    CANARY_WEIGHT,
    MONITOR_OUTBOX,
    MONITOR_OUTBOX_DEAD,
    flag_key,
    servers_key,
)
from devkit import cdpipe_env, free_port, free_port_block
from monitoring.mailer import message
from tests.support import wait_until

PASSWORD = "hostile-test-password"
MB = 1024 * 1024
CDPIPE = str(Path(sys.executable).parent / "cdpipe")
# What is written into servers:prod, as bytes (one is not UTF-8), each skipped.
HOSTILE_ENTRIES: list[tuple[bytes, bytes]] = [
    (b"evil\r\nSubject: x", b"127.0.0.1:1"),                    # the reported crash
    (b"a" * MB, b"127.0.0.1:1"),                                 # a 1 MB id
    (b"big-address", b"127.0.0.1:" + b"9" * MB),                 # a 1 MB address
    (b"esc\x1b[31m", b"127.0.0.1:1"),                            # a terminal escape
    (b"\xff\xfe-not-utf8", b"127.0.0.1:1"),                      # not UTF-8
    (b"bad-address", b"127.0.0.1:1\r\nserver x 10.0.0.1:80"),    # a config injection
    (b"bad-port", b"127.0.0.1:99999"),
]
SERVER_NAME = "prod-1"
DOWN_SERVER = "prod-9"  # a real entry whose server does not answer: a real alert


class Backend(BaseHTTPRequestHandler):
    """The app as the proxy and the monitor see it: / , /healthz and /metrics."""

    def do_GET(self) -> None:
        body = (b"instance_cpu_percent 1\ninstance_memory_percent 1\n"
                if self.path == "/metrics" else b"ok\n")
        try:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # a health check that did not wait for the body

    def log_message(self, *args: object) -> None:
        pass


@dataclass
class Rig:
    dir: Path
    redis_port: int
    proxy_port: int
    maildir: Path
    monitor: subprocess.Popen[bytes]
    controller: subprocess.Popen[bytes]
    monitor_log: Path
    controller_log: Path
    monitor_config: Path

    def redis(self, decode: bool = True) -> redis.Redis:
        return redis.Redis(port=self.redis_port, password=PASSWORD, decode_responses=decode)

    def polls(self) -> int:
        found = re.findall(r"monitor INFO poll (\d+):", self.monitor_log.read_text(
            encoding="utf-8", errors="replace"))
        return int(found[-1]) if found else 0

    def wait_polls(self, more: int) -> None:
        target = self.polls() + more
        wait_until(lambda: self.polls() >= target, 30 + 3 * more,
                   lambda: f"the monitor's poll {target} (at {self.polls()})", interval=0.2)

    def alive(self) -> None:
        for name, proc in (("monitor", self.monitor), ("controller", self.controller)):
            assert proc.poll() is None, f"the {name} exited ({proc.returncode}): " + (
                self.monitor_log if name == "monitor" else self.controller_log
            ).read_text(encoding="utf-8", errors="replace")[-3000:]


def _start(args: list[str], log: Path, cwd: Path | None = None) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=cwd,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _wait_port(port: int, timeout: float = 15) -> None:
    def open_() -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0
    wait_until(open_, timeout, f"something listening on port {port}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _haproxy_base(admin_socket: Path, port: int) -> str:
    return f"""global
    stats socket {admin_socket} mode 600 level admin expose-fd listeners
    stats timeout 30s
    hard-stop-after 10s

defaults
    mode http
    option redispatch 1
    retries 3
    timeout connect 2s
    timeout client 10s
    timeout server 10s

frontend www
    bind 127.0.0.1:{port}
    default_backend app

backend app
    balance roundrobin
    option httpchk
    http-check send meth GET uri /healthz
    http-check expect status 200
    default-server check inter 500ms fall 2 rise 1
"""


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    """Every component started here, and stopped after the module, whatever happens."""
    base_dir = tmp_path_factory.mktemp("hostile")
    procs: list[subprocess.Popen[bytes]] = []
    backend = ThreadingHTTPServer(("127.0.0.1", 0), Backend)
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    try:
        redis_port = free_port()
        procs.append(subprocess.Popen(
            ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
             "--requirepass", PASSWORD, "--save", "", "--appendonly", "no",
             "--dir", str(base_dir), "--notify-keyspace-events", "KA"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        _wait_port(redis_port)
        r = redis.Redis(port=redis_port, password=PASSWORD, decode_responses=True)
        wait_until(lambda: bool(r.ping()), 10, "redis-server answering")
        backend_port = backend.server_address[1]
        r.hset(servers_key("prod"), SERVER_NAME, f"127.0.0.1:{backend_port}")
        r.hset(servers_key("prod"), DOWN_SERVER, f"127.0.0.1:{free_port()}")

        smtp_port = free_port()
        maildir = base_dir / "Maildir"
        procs.append(_start([sys.executable, "-m", "monitoring.mailsink", "--port",
                             str(smtp_port), "--maildir", str(maildir)],
                            base_dir / "mailsink.log"))
        _wait_port(smtp_port)

        proxy_port = free_port()
        base = base_dir / "haproxy.base.cfg"
        cfg = base_dir / "haproxy.cfg"
        base.write_text(_haproxy_base(base_dir / "admin.sock", proxy_port))
        cfg.write_text(base.read_text())
        procs.append(_start(["haproxy", "-W", "-S", str(base_dir / "master.sock"), "-f",
                             str(cfg)], base_dir / "haproxy.log"))
        _wait_port(proxy_port)
        redis_url = f"redis://default:{PASSWORD}@127.0.0.1:{redis_port}/0"
        controller_json = base_dir / "controller.json"
        controller_json.write_text(json.dumps({
            "redis_url": redis_url, "base_file": str(base), "config_file": str(cfg),
            "socket": str(base_dir / "admin.sock"),
            "master_socket": str(base_dir / "master.sock"), "resync_seconds": 1.0,
            "cookie_key": "hostile-suite-cookie-key"}))
        controller_log = base_dir / "controller.log"
        controller = _start([sys.executable, "-m", "cdpipe_host.proxy", str(controller_json),
                             "run"], controller_log)
        procs.append(controller)

        monitor_yml = base_dir / "monitor.yml"
        monitor_yml.write_text(json.dumps({
            "interval_seconds": 1, "timeout_seconds": 1, "down_after_polls": 2,
            "redis_url": redis_url, "discover_roles": ["prod", "canary"],
            "smtp": {"host": "127.0.0.1", "port": smtp_port, "timeout_seconds": 2},
            "canary": {"enabled": False}, "rules": []}))
        monitor_log = base_dir / "monitor.log"
        monitor = _start([sys.executable, "-m", "monitoring.monitor", str(monitor_yml)],
                         monitor_log)
        procs.append(monitor)
        rig = Rig(base_dir, redis_port, proxy_port, maildir, monitor, controller,
                  monitor_log, controller_log, monitor_yml)
        wait_until(lambda: _status(rig) == 200, 30, "the proxy serving prod-1")
        rig.wait_polls(1)
        yield rig
    finally:
        for proc in reversed(procs):
            _stop(proc)
        backend.shutdown()


def _status(rig: Rig) -> int:
    try:
        return requests.get(f"http://127.0.0.1:{rig.proxy_port}/", timeout=2).status_code
    except requests.RequestException:
        return 0


def _mail(rig: Rig) -> list[mailbox.MaildirMessage]:
    if not (rig.maildir / "new").exists():
        return []
    return list(mailbox.Maildir(str(rig.maildir), create=False))


def _subjects(rig: Rig) -> list[str]:
    return [str(m["Subject"]) for m in _mail(rig)]


def _count(path: Path, text: str) -> int:
    return path.read_text(encoding="utf-8", errors="replace").count(text)


def test_hostile_server_entries_are_skipped_logged_once_and_crash_nothing(rig: Rig) -> None:
    monitor_pid, controller_pid = rig.monitor.pid, rig.controller.pid
    raw = rig.redis(decode=False)
    for name, address in HOSTILE_ENTRIES:
        raw.hset(servers_key("prod"), name, address)
    rig.wait_polls(5)  # the crash came two polls after the entry: well past that
    rig.alive()
    assert (rig.monitor.pid, rig.controller.pid) == (monitor_pid, controller_pid)
    # The real alert of the same kind (an instance that does not answer) is mailed.
    firing = f"[cdpipe] FIRING instance-down/{DOWN_SERVER}"
    wait_until(lambda: firing in _subjects(rig), 30, lambda: f"{firing} in {_subjects(rig)}")
    for msg in _mail(rig):
        assert len(msg.get_all("Subject") or []) == 1  # no header injected
        assert "evil" not in str(msg["Subject"])
    # Each hostile entry logged once by each reader, though read on every poll.
    for log in (rig.monitor_log, rig.controller_log):
        assert _count(log, "invalid entry") == len(HOSTILE_ENTRIES), log.name
    assert all(len(line) < 1000 for line in rig.monitor_log.read_text(
        encoding="utf-8", errors="replace").splitlines())
    # HAProxy was given only the real servers, and still serves.
    cfg = (rig.dir / "haproxy.cfg").read_text()
    assert re.findall(r"^\s*server (\S+)", cfg, re.M) == [SERVER_NAME]
    assert {_status(rig) for _ in range(10)} == {200}


def test_a_bad_outbox_message_is_set_aside_and_the_rest_delivered(rig: Rig) -> None:
    r = rig.redis()
    junk = "not a message {"
    # A body with a lone surrogate: JSON takes it, no mail encoding does.
    unsendable = json.dumps({"id": "ab12", "subject": "[cdpipe] unsendable",
                             "body": "\ud800", "attempts": 0, "next_try": 0.0})
    legit = "[cdpipe] legitimate after the bad ones"
    pipe = r.pipeline(transaction=True)
    pipe.rpush(MONITOR_OUTBOX, junk, unsendable, message(legit, "still delivered\n"))
    pipe.execute()
    wait_until(lambda: legit in _subjects(rig), 30, lambda: f"{legit} in {_subjects(rig)}")
    assert junk in r.lrange(MONITOR_OUTBOX_DEAD, 0, -1)
    waiting = [json.loads(m) for m in r.lrange(MONITOR_OUTBOX, 0, -1)
               if "unsendable" in m]
    assert waiting and waiting[0]["bad_tries"] >= 1  # counted, waiting for its next try
    rig.wait_polls(2)
    rig.alive()
    assert _count(rig.monitor_log, "set aside") == 1


def test_hostile_flags_and_canary_values_are_read_safely(
        rig: Rig, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from cdpipe import cli, cli_controls

    r = rig.redis()
    r.set(flag_key("hiddenfeature"), "x" * MB)
    r.set(flag_key("evil\r\n\x1b[31m"), "on")
    r.set(flag_key("beta"), "50%\x00")
    r.set(flag_key("gamma"), "25%")
    r.set(CANARY_WEIGHT, "\x1b[2J" + "9" * MB)
    # The CLI's own command, against this Redis (how it finds an environment's Redis
    # is another concern: ACL users and the state file).
    monkeypatch.setattr(cli_controls, "_redis", lambda: rig.redis())
    with pytest.raises(SystemExit) as done:
        cli.main(["flag", "list"])
    assert done.value.code == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 4
    for line in out:
        name, value = line.split("\t")
        assert len(line) < 300
        assert not re.search(r"[\x00-\x1f\x7f]", name + value), line
    listed = dict(line.split("\t") for line in out)
    assert listed["gamma"] == "25%"
    assert listed["hiddenfeature"].startswith("invalid 'xxx")
    assert listed["beta"] == r"invalid '50%\x00' (reads as off)"
    assert "'evil\\r\\n\\x1b[31m' (not a flag name, ignored)" in listed
    rig.wait_polls(3)
    rig.alive()
    assert _count(rig.controller_log, "for canary:weight") >= 1
    assert {_status(rig) for _ in range(10)} == {200}  # the default weight: serving


RULES_OK = "rules:\n  - {name: cpu, metric: cpu_percent, role: prod, upper: 80}\n"
BAD_RULES: list[tuple[bytes, str]] = [
    (b"rules: [\n  - {name: x", "not valid YAML at line"),
    (b"rules:\n  - {name: x, metric: disk_percent, role: prod, upper: 80}",
     "at rules.0.metric"),
    (b"rules:\n  - {name: x, metric: cpu_percent, role: prod, upper: lots}",
     "at rules.0.upper"),
    (b"rules:\n  - {name: \"x\\r\\nSubject: y\", metric: cpu_percent, role: prod, "
     b"upper: 8}", "at rules.0.name"),
    (b"rules:\n  - {name: " + b"n" * MB + b", metric: cpu_percent, role: prod, upper: 8}",
     "at rules.0.name"),
    (b"rule:\n  - {name: x, metric: cpu_percent, role: prod, upper: 80}",
     "unknown key 'rule'"),
    (b"rules: \xff\xfe", "not UTF-8"),
    (b"rules: just words", "at rules"),
]


@pytest.mark.parametrize(("content", "names"), BAD_RULES,
                         ids=[n for _, n in BAD_RULES])
def test_a_malformed_rules_file_is_one_line(rig: Rig, tmp_path: Path, content: bytes,
                                            names: str) -> None:
    rules = tmp_path / "rules.yml"
    rules.write_bytes(content)
    check = subprocess.run([sys.executable, "-m", "monitoring.monitor",
                            str(rig.monitor_config), "--rules", str(rules), "--check"],
                           capture_output=True, text=True, timeout=60, check=False)
    assert check.returncode == 2
    assert check.stderr.count("\n") == 1 and names in check.stderr, check.stderr
    assert len(check.stderr) < 600
    # cdpipe up refuses it before anything runs (a scratch home: nothing to provision).
    up = _cdpipe_in_process(["up", "--monitor-rules", str(rules)], tmp_path)
    _one_line(up, 1)
    assert names in up.stderr
    assert not (tmp_path / "home" / "state.json").exists()


def test_a_good_rules_file_passes_the_same_check(rig: Rig, tmp_path: Path) -> None:
    rules = tmp_path / "rules.yml"
    rules.write_text(RULES_OK)
    check = subprocess.run([sys.executable, "-m", "monitoring.monitor",
                            str(rig.monitor_config), "--rules", str(rules), "--check"],
                           capture_output=True, text=True, timeout=60, check=False)
    assert (check.returncode, check.stdout.strip()) == (0, "ok: 1 rules, 0 static targets")


def _cdpipe_in_process(argv: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """The CLI's main() in a process of its own, given argv on stdin: a single argument
    of 1 MB is beyond what exec() passes (128 KiB)."""
    env = cdpipe_env(tmp_path / "home", free_port_block(20))
    return subprocess.run(
        [sys.executable, "-c",
         "import json, sys\nfrom cdpipe.cli import main\nmain(json.load(sys.stdin))"],
        input=json.dumps(argv), capture_output=True, text=True, timeout=60, env=env,
        check=False)


def _one_line(out: subprocess.CompletedProcess[str], code: int) -> None:
    assert out.returncode == code, (out.returncode, out.stdout[-500:], out.stderr[-500:])
    assert out.stderr.startswith("error: ") and out.stderr.count("\n") == 1, out.stderr[:2000]
    assert len(out.stderr) < 1000 and not re.search(r"[\x00-\x09\x0b-\x1f\x7f]", out.stderr)


HUGE = "x" * MB
CONTROL = "a\r\nb\x1b[31m\x00"
BAD_COMMANDS: list[tuple[str, list[str], int]] = [
    ("flag name with a line break", ["flag", "set", "a\nb", "on"], 1),
    ("flag name of 1 MB", ["flag", "set", HUGE, "on"], 1),
    ("flag value with control characters", ["flag", "set", "beta", CONTROL], 1),
    ("flag value of 1 MB", ["flag", "set", "beta", HUGE], 1),
    ("flag value out of range", ["flag", "set", "beta", "101%"], 1),
    ("flag value in other digits", ["flag", "set", "beta", "\uff15\uff10%"], 1),
    ("flag set without a value", ["flag", "set", "beta"], 2),
    ("flag list with an argument", ["flag", "list", CONTROL], 2),
    ("flag delete of a name with control characters", ["flag", "delete", CONTROL], 1),
    ("flag delete of a 1 MB name", ["flag", "delete", HUGE], 1),
    ("canary weight out of range", ["canary", "weight", "101"], 1),
    ("canary weight with control characters", ["canary", "weight", CONTROL], 1),
    ("canary weight of 1 MB of digits", ["canary", "weight", "9" * MB], 1),
    ("canary weight without a value", ["canary", "weight"], 2),
    ("deploy ref with control characters", ["deploy", "--ref", CONTROL], 1),
    ("deploy ref of 1 MB", ["deploy", "--ref", HUGE], 1),
    ("deploy ref as an option", ["deploy", "--ref", "--upload-pack=touch x"], 1),
    ("deploy to an unknown target", ["deploy", "--ref", "HEAD", "--target", CONTROL], 1),
    ("up with a bad ref", ["up", "--ref", "HEAD\n"], 1),
    ("up with a missing rules file", ["up", "--monitor-rules", "/nonexistent/r.yml"], 2),
    ("up with a bad interval", ["up", "--monitor-interval", "0"], 2),
    ("scale out with a word", ["scale", "out", "--max", CONTROL], 2),
    ("scale out with 1 MB of digits", ["scale", "out", "--max", "9" * MB], 2),
    ("scale out below one", ["scale", "out", "--max", "0"], 2),
    ("canary status with an argument", ["canary", "status", HUGE], 2),
    ("canary alert with an option", ["canary", "alert", "--now"], 2),
    ("canary clear with an argument", ["canary", "clear", "x"], 2),
    ("canary promote with an argument", ["canary", "promote", "x"], 2),
    ("status with an unknown option", ["status", "--" + HUGE], 2),
    ("down with a bad environment id", ["down", "--env", CONTROL], 1),
    ("provision with a 1 MB environment id", ["provision", "--env", HUGE], 1),
    ("an unknown provider", ["status", "--provider", "mars"], 2),
    ("an unknown command", [CONTROL], 2),
]


@pytest.mark.parametrize(("argv", "code"), [(a, c) for _, a, c in BAD_COMMANDS],
                         ids=[n for n, _, _ in BAD_COMMANDS])
def test_every_command_refuses_malformed_input_in_one_line(
        rig: Rig, tmp_path: Path, argv: list[str], code: int) -> None:
    r = rig.redis()

    def keys() -> dict[str, str]:
        # The rig's monitor writes its own keys (alerts, the outbox) meanwhile.
        return {k: r.type(k) for k in r.scan_iter(count=1000) if not k.startswith("monitor:")}

    before = keys()
    out = _cdpipe_in_process(argv, tmp_path)
    _one_line(out, code)
    assert out.stdout == ""
    assert not (tmp_path / "home" / "state.json").exists()  # nothing provisioned
    assert keys() == before


@pytest.mark.parametrize("argv", [["flag", "set", "y" * 100_000, "on"],
                                  ["deploy", "--ref", "z" * 100_000]])
def test_the_installed_command_gives_one_line_for_large_arguments(
        tmp_path: Path, argv: list[str]) -> None:
    # The largest single argument exec() passes is 128 KiB.
    env = cdpipe_env(tmp_path / "home", free_port_block(20))
    out = subprocess.run([CDPIPE, *argv], capture_output=True, text=True, timeout=60,
                         env=env, check=False)
    _one_line(out, 1)
    assert "(100000 characters)" in out.stderr


def test_the_monitor_and_controller_outlived_the_module(rig: Rig) -> None:
    rig.wait_polls(2)
    rig.alive()
    assert _count(rig.monitor_log, "Traceback") == 0
    assert _count(rig.controller_log, "Traceback") == 0
