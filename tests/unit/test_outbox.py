"""The mail outbox (monitoring.mailer) over a small in-memory fake of the Redis list
calls it makes and a fake SMTP send: headers built safely from any value, a message
that fails for its own reason set aside after MAX_TRIES without blocking the rest, a
server that is down blocking nothing and losing nothing."""

from __future__ import annotations

import json
import smtplib
from email.message import EmailMessage
from typing import Any

import pytest

from monitoring import mailer
from monitoring.config import Smtp
from monitoring.mailer import DEAD, MAX_TRIES, OUTBOX, BadMessage, build, deliver_due, message


class FakePipeline:
    def __init__(self, r: FakeRedis) -> None:
        self.r = r
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Any:
        def queue(*args: Any) -> FakePipeline:
            self.calls.append((name, args))
            return self
        return queue

    def execute(self) -> list[Any]:
        return [getattr(self.r, name)(*args) for name, args in self.calls]


class FakeRedis:
    def __init__(self) -> None:
        self.lists: dict[str, list[str]] = {}

    def lrange(self, key: str, start: int, end: int) -> list[str]:
        items = self.lists.get(key, [])
        return list(items[start:] if end == -1 else items[start:end + 1])

    def rpush(self, key: str, *values: str) -> int:
        self.lists.setdefault(key, []).extend(values)
        return len(self.lists[key])

    def lpush(self, key: str, *values: str) -> int:
        for value in values:
            self.lists.setdefault(key, []).insert(0, value)
        return len(self.lists[key])

    def lrem(self, key: str, count: int, value: str) -> int:
        items = self.lists.get(key, [])
        if value in items:
            items.remove(value)
            return 1
        return 0

    def ltrim(self, key: str, start: int, end: int) -> bool:
        self.lists[key] = self.lists.get(key, [])[start:end + 1]
        return True

    def pipeline(self, transaction: bool = True) -> FakePipeline:
        return FakePipeline(self)


SMTP = Smtp()


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[EmailMessage]:
    """What the fake server took; a subject containing 'refused' is refused (5xx data),
    'down' makes the whole server look down."""
    taken: list[EmailMessage] = []

    def send(smtp: Smtp, msg: EmailMessage) -> None:
        if "down" in str(msg["Subject"]):
            raise ConnectionRefusedError(111, "Connection refused")
        if "refused" in str(msg["Subject"]):
            raise BadMessage("the server refused it: 554")
        taken.append(msg)
    monkeypatch.setattr(mailer, "send", send)
    return taken


def subjects(msgs: list[EmailMessage]) -> list[str]:
    return [str(m["Subject"]) for m in msgs]


def test_headers_are_built_without_injection() -> None:
    msg = build(SMTP, "[cdpipe] FIRING instance-down/evil\r\nSubject: x\nBcc: a@b",
                "body\r\nwith lines\n", "0123abcd")
    assert msg.get_all("Subject") == ["[cdpipe] FIRING instance-down/evil Subject: x Bcc: a@b"]
    assert msg.get_all("Bcc") is None
    raw = msg.as_bytes()
    assert raw.count(b"\nSubject:") == 1 and b"\nBcc:" not in raw


def test_a_huge_subject_is_cut_and_an_odd_message_id_replaced() -> None:
    msg = build(SMTP, "x" * 1_000_000, "body", "not hex\r\nX: y")
    assert len(str(msg["Subject"])) == mailer.SUBJECT_CHARS
    assert "X: y" not in str(msg["Message-ID"])


def test_an_unencodable_body_is_a_bad_message() -> None:
    with pytest.raises(BadMessage):
        build(SMTP, "subject", "\ud800", "ab")


def test_a_bad_message_is_set_aside_after_max_tries_and_never_blocks(
        sent: list[EmailMessage], caplog: pytest.LogCaptureFixture) -> None:
    r = FakeRedis()
    r.rpush(OUTBOX, message("[cdpipe] first", "1"), message("[cdpipe] refused one", "x"),
            message("[cdpipe] after it", "2"))
    now = 1000.0
    assert deliver_due(r, SMTP, now) == 2  # type: ignore[arg-type]
    assert subjects(sent) == ["[cdpipe] first", "[cdpipe] after it"]
    for _ in range(MAX_TRIES - 1):
        r.rpush(OUTBOX, message("[cdpipe] meanwhile", "3"))
        now += mailer.MAX_BACKOFF_SECONDS + 1  # every retry due
        assert deliver_due(r, SMTP, now) == 1  # type: ignore[arg-type]
    assert r.lrange(OUTBOX, 0, -1) == []
    dead = r.lrange(DEAD, 0, -1)
    assert len(dead) == 1 and json.loads(dead[0])["subject"] == "[cdpipe] refused one"
    assert json.loads(dead[0])["bad_tries"] == MAX_TRIES - 1  # as it was before the last
    assert subjects(sent).count("[cdpipe] meanwhile") == MAX_TRIES - 1
    assert sum("set aside" in rec.getMessage() for rec in caplog.records) == 1


def test_junk_in_the_outbox_is_set_aside_at_once(sent: list[EmailMessage]) -> None:
    r = FakeRedis()
    junk = ["not json {", "[1, 2]", json.dumps({"id": 1, "subject": None}), "\ufffd\ufffd"]
    r.rpush(OUTBOX, *junk, message("[cdpipe] real", "body"))
    assert deliver_due(r, SMTP, 0.0) == 1  # type: ignore[arg-type]
    assert subjects(sent) == ["[cdpipe] real"]
    assert sorted(r.lrange(DEAD, 0, -1)) == sorted(junk)
    assert r.lrange(OUTBOX, 0, -1) == []


def test_a_server_that_is_down_keeps_every_message_and_sets_none_aside(
        sent: list[EmailMessage], monkeypatch: pytest.MonkeyPatch) -> None:
    r = FakeRedis()
    r.rpush(OUTBOX, message("[cdpipe] server down", "1"), message("[cdpipe] waits", "2"))
    now = 0.0
    for _ in range(MAX_TRIES * 3):
        now += mailer.MAX_BACKOFF_SECONDS + 1
        assert deliver_due(r, SMTP, now) == 0  # type: ignore[arg-type]
    assert r.lrange(DEAD, 0, -1) == []
    assert len(r.lrange(OUTBOX, 0, -1)) == 2
    first = next(json.loads(m) for m in r.lrange(OUTBOX, 0, -1) if "down" in m)
    assert first["attempts"] == MAX_TRIES * 3 and first.get("bad_tries", 0) == 0


def test_smtp_data_refusal_is_the_messages_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 5xx answer to the data is this message's problem; a 4xx is the server's."""

    class Client:
        def __init__(self, *args: object, **kwargs: object) -> None:
            pass

        def __enter__(self) -> Client:
            return self

        def __exit__(self, *args: object) -> None:
            pass

        def send_message(self, msg: EmailMessage) -> None:
            code = int(str(msg["Subject"]).split()[-1])
            raise smtplib.SMTPDataError(code, b"no")

    monkeypatch.setattr(mailer.smtplib, "SMTP", Client)
    with pytest.raises(BadMessage):
        mailer.send(SMTP, build(SMTP, "code 554", "b", "ab"))
    with pytest.raises(smtplib.SMTPDataError):
        mailer.send(SMTP, build(SMTP, "code 451", "b", "ab"))
