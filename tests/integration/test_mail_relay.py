"""Alert mail through a relay that requires TLS and a login, over real sockets: real
aiosmtpd servers on 127.0.0.1 (devkit.smtp_relay: a CA of the test's own, a server
certificate for the IP 127.0.0.1), a real redis-server holding the outbox. What is
delivered, and what stays queued with one line saying why (login refused, certificate
not trusted, wrong host name, server down), then arrives once the server is back, also
across a restart of the monitor's process."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import yaml

from devkit import free_port
from devkit.smtp_relay import SmtpRelay
from monitoring.config import PASSWORD_VARIABLE, Smtp
from monitoring.mailer import OUTBOX, deliver_due, message

SUBJECT = "[cdpipe] FIRING prod-cpu"
# aiosmtpd's auth_require_tls only knows STARTTLS: with TLS from the first byte it is off
# (the connection is TLS all the same), and aiosmtpd warns at each connection.
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[SmtpRelay]:
    server = SmtpRelay(tmp_path / "relay", security="starttls")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def tls_relay(tmp_path: Path) -> Iterator[SmtpRelay]:
    server = SmtpRelay(tmp_path / "tls-relay", security="tls")
    server.start()
    yield server
    server.stop()


def password_file(tmp_path: Path, password: str) -> str:
    path = tmp_path / f"smtp_password_{len(list(tmp_path.glob('smtp_password_*')))}"
    path.write_text(password + "\n", encoding="utf-8")
    path.chmod(0o600)
    return str(path)


def smtp_for(relay: SmtpRelay, tmp_path: Path, **changes: object) -> Smtp:
    settings: dict[str, object] = {
        "host": "127.0.0.1", "port": relay.port, "security": relay.security,
        "user": relay.user, "password_file": password_file(tmp_path, relay.password),
        "ca_file": str(relay.ca_file), "sender": "monitor@cdpipe.test",
        "recipients": ["oncall@cdpipe.test"], "timeout_seconds": 5}
    return Smtp.model_validate(settings | changes)


def queued(r: redis.Redis) -> list[dict[str, object]]:
    return [json.loads(m) for m in r.lrange(OUTBOX, 0, -1)]


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [rec.getMessage() for rec in caplog.records
            if rec.name == "monitor.mail" and rec.levelno == logging.WARNING]


def test_starttls_and_login_deliver(r: redis.Redis, relay: SmtpRelay, tmp_path: Path) -> None:
    r.rpush(OUTBOX, message(SUBJECT, "prod cpu 93 > 40\n"))
    assert deliver_due(r, smtp_for(relay, tmp_path)) == 1
    assert queued(r) == []
    [got] = relay.messages
    assert got.subject == SUBJECT and got.login == relay.user
    assert got.mail_from == "monitor@cdpipe.test" and got.rcpt_tos == ["oncall@cdpipe.test"]


def test_the_relay_refuses_mail_without_tls_and_login(r: redis.Redis, relay: SmtpRelay,
                                                      tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture
                                                      ) -> None:
    """The server of these tests really requires both: plain SMTP without a login gets
    nowhere (so the deliveries above prove TLS and the login)."""
    r.rpush(OUTBOX, message(SUBJECT, "body\n"))
    plain = Smtp(host="127.0.0.1", port=relay.port, timeout_seconds=5)
    assert deliver_due(r, plain) == 0
    assert relay.messages == [] and len(queued(r)) == 1
    assert "530" in warnings_of(caplog)[0]


def test_implicit_tls_delivers_with_the_password_from_the_environment(
        r: redis.Redis, tls_relay: SmtpRelay, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_VARIABLE, tls_relay.password)
    r.rpush(OUTBOX, message(SUBJECT, "body\n"))
    assert deliver_due(r, smtp_for(tls_relay, tmp_path, password_file=None)) == 1
    assert tls_relay.subjects() == [SUBJECT] and queued(r) == []


@pytest.mark.parametrize(("case", "changes", "says"), [
    ("wrong password", {"password": "not-the-password"},
     "login as 'cdpipe-monitor' refused by 127.0.0.1:{port} (starttls): 535"),
    ("untrusted CA (the system's)", {"ca_file": None},
     "TLS with 127.0.0.1:{port} (starttls) failed, its certificate is not trusted: "
     "unable to get local issuer certificate (a private relay: set ca_file)"),
    ("wrong host name", {"host": "localhost"},
     "TLS with localhost:{port} (starttls) failed, its certificate is not trusted: "
     "Hostname mismatch"),
])
def test_a_failure_keeps_the_mail_queued_with_one_line_saying_which(
        r: redis.Redis, relay: SmtpRelay, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        case: str, changes: dict[str, object], says: str) -> None:
    wrong = dict(changes)
    if "password" in wrong:
        wrong["password_file"] = password_file(tmp_path, str(wrong.pop("password")))
    r.rpush(OUTBOX, message(SUBJECT, "body\n"))
    caplog.set_level(logging.INFO, logger="monitor.mail")
    assert deliver_due(r, smtp_for(relay, tmp_path, **wrong)) == 0, case
    assert relay.messages == []
    [item] = queued(r)
    assert item["attempts"] == 1 and item["subject"] == SUBJECT
    [line] = warnings_of(caplog)
    assert says.format(port=relay.port) in line, line
    assert line.startswith(f"mail {SUBJECT!r} not sent: ") and "\n" not in line
    assert relay.password not in caplog.text and "not-the-password" not in caplog.text
    if case == "wrong password":
        assert relay.failed_logins >= 1  # smtplib tries PLAIN, then LOGIN


def test_starttls_is_never_skipped_when_the_server_does_not_offer_it(
        r: redis.Redis, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A server without STARTTLS (here the plain Maildir sink) gets nothing: no
    downgrade to plain text with the password."""
    port = free_port()
    sink = subprocess.Popen([sys.executable, "-m", "monitoring.mailsink", "--port", str(port),
                             "--maildir", str(tmp_path / "Maildir")], stdout=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 15
        while b"SMTP on" not in (sink.stdout.readline() if sink.stdout else b""):
            assert time.monotonic() < deadline and sink.poll() is None
        r.rpush(OUTBOX, message(SUBJECT, "body\n"))
        smtp = Smtp(host="127.0.0.1", port=port, security="starttls", user="u",
                    password_file=password_file(tmp_path, "secret-pw"), timeout_seconds=5)
        assert deliver_due(r, smtp) == 0
        [line] = warnings_of(caplog)
        assert "STARTTLS extension not supported" in line
        assert not list((tmp_path / "Maildir" / "new").glob("*"))
    finally:
        sink.terminate()
        sink.wait(10)


def test_server_down_then_back_on_the_same_port(r: redis.Redis, relay: SmtpRelay,
                                                tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    smtp = smtp_for(relay, tmp_path)
    relay.stop()
    r.rpush(OUTBOX, message(SUBJECT, "body\n"))
    now = time.time()
    assert deliver_due(r, smtp, now=now) == 0
    assert f"SMTP server 127.0.0.1:{relay.port} (starttls) unreachable" in \
        warnings_of(caplog)[0]
    assert deliver_due(r, smtp, now=now + 1) == 0  # backing off: not even tried
    assert len(warnings_of(caplog)) == 1
    relay.start()
    assert deliver_due(r, smtp, now=now + 3) == 1
    assert relay.subjects() == [SUBJECT] and queued(r) == []


def test_queued_mail_arrives_across_a_restart_of_the_monitor(
        redis_server: tuple[int, str], r: redis.Redis, relay: SmtpRelay,
        tmp_path: Path) -> None:
    """The monitor process runs one cycle while the relay is down (the mail stays in
    Redis), exits; a new monitor process delivers it once the relay is back."""
    port, password = redis_server
    config = tmp_path / "monitor.yml"
    smtp = smtp_for(relay, tmp_path).model_dump(exclude_none=True)
    config.write_text(yaml.safe_dump({
        "redis_url": f"redis://default:{password}@127.0.0.1:{port}/0", "discover_roles": [],
        "smtp": smtp, "canary": {"enabled": False}}), encoding="utf-8")

    def monitor_once() -> str:
        done = subprocess.run([sys.executable, "-m", "monitoring.monitor", str(config),
                               "--once"], capture_output=True, text=True, timeout=60,
                              check=True)
        return done.stdout

    relay.stop()
    r.rpush(OUTBOX, message(SUBJECT, "body\n"))
    out = monitor_once()
    assert f"SMTP server 127.0.0.1:{relay.port} (starttls) unreachable" in out
    [item] = queued(r)
    assert item["attempts"] == 1
    relay.start()
    time.sleep(max(0.0, float(str(item["next_try"])) - time.time()) + 0.1)
    out = monitor_once()
    assert f"mail sent: {SUBJECT!r}" in out
    assert relay.subjects() == [SUBJECT] and queued(r) == []
    assert relay.password not in out
