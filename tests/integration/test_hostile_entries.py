"""Hostile values written straight into a real redis-server, read by the real readers:
the monitor (discovery, alert mail over a real SMTP server), the proxy controller's
read of its desired state, and the app's flag cache. Invalid entries are skipped and
logged once; nothing raises."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from app.flags import FlagCache
from cdpipe_host.keys import (
    CANARY_ALERT,
    CANARY_WEIGHT,
    MONITOR_ALERTS,
    MONITOR_OUTBOX,
    MONITOR_OUTBOX_DEAD,
    flag_key,
    servers_key,
)
from cdpipe_host.names import DECODE_ERRORS
from cdpipe_host.proxy.desired import read_desired
from devkit import free_port
from monitoring.config import MonitorConfig
from monitoring.mailer import MAX_BACKOFF_SECONDS, MAX_TRIES, deliver_due, message
from monitoring.mailsink import MaildirHandler
from monitoring.monitor import Monitor
from tests.support import maildir_subjects, wait_until

MB = 1024 * 1024
HOSTILE: dict[bytes, bytes] = {
    b"evil\r\nSubject: x": b"127.0.0.1:1",
    b"a" * MB: b"127.0.0.1:1",
    b"big-address": b"127.0.0.1:" + b"9" * MB,
    b"\xff\xfe": b"127.0.0.1:1",
    b"bad-address": b"\xff:80",
    b"esc\x1b[31m": b"127.0.0.1:1",
}


class RefusingHandler(MaildirHandler):
    """The Maildir sink, but a message whose subject says 'refuse-me' gets a 554."""

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or envelope.content or b""
        raw = content if isinstance(content, bytes) else content.encode()
        if b"refuse-me" in raw:
            return "554 5.6.0 message refused"
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    port = free_port()
    controller = Controller(RefusingHandler(tmp_path / "Maildir"), hostname="127.0.0.1",
                            port=port)
    controller.start()
    yield port, tmp_path / "Maildir"
    controller.stop()


@pytest.fixture
def raw_redis(redis_server: tuple[int, str]) -> redis.Redis:
    port, password = redis_server
    return redis.Redis(port=port, password=password)  # bytes in, bytes out


def monitor_for(redis_server: tuple[int, str], smtp_port: int) -> Monitor:
    port, password = redis_server
    return Monitor(MonitorConfig.model_validate({
        "interval_seconds": 1, "timeout_seconds": 1, "down_after_polls": 2,
        "redis_url": f"redis://default:{password}@127.0.0.1:{port}/0",
        "discover_roles": ["prod", "canary"], "canary": {"enabled": False},
        "smtp": {"host": "127.0.0.1", "port": smtp_port, "timeout_seconds": 2}}))


def write_hostile(r: redis.Redis, real: dict[str, str]) -> None:
    r.hset(servers_key("prod"), mapping={**HOSTILE, **{k.encode(): v.encode()
                                                       for k, v in real.items()}})


def test_the_monitor_skips_hostile_entries_and_still_mails_the_real_alert(
        redis_server, raw_redis, smtp, caplog) -> None:  # type: ignore[no-untyped-def]
    smtp_port, maildir = smtp
    down = f"127.0.0.1:{free_port()}"
    write_hostile(raw_redis, {"prod-9": down})
    monitor = monitor_for(redis_server, smtp_port)
    with caplog.at_level(logging.WARNING, logger="monitor"):
        for _ in range(4):  # the reported crash came at the second poll
            assert [t[0] for t in monitor.targets()] == ["prod-9"]
            asyncio.run(monitor.cycle())
            deliver_due(monitor.r, monitor.cfg.smtp)
    assert maildir_subjects(maildir) == ["[cdpipe] FIRING instance-down/prod-9"]
    skipped = [r.getMessage() for r in caplog.records if "invalid entry" in r.getMessage()]
    assert len(skipped) == len(HOSTILE)
    assert all(len(line) < 400 and "\n" not in line for line in skipped)
    assert list(monitor.r.hkeys(MONITOR_ALERTS)) == ["instance-down/prod-9"]


def test_a_mail_the_server_refuses_is_set_aside_and_the_rest_delivered(
        redis_server, smtp, caplog) -> None:  # type: ignore[no-untyped-def]
    smtp_port, maildir = smtp
    monitor = monitor_for(redis_server, smtp_port)
    r = monitor.r
    r.rpush(MONITOR_OUTBOX, message("[cdpipe] refuse-me", "x"), message("[cdpipe] one", "1"))
    now = 1000.0
    for round_ in range(MAX_TRIES):
        r.rpush(MONITOR_OUTBOX, message(f"[cdpipe] round {round_}", "2"))
        deliver_due(r, monitor.cfg.smtp, now)
        now += MAX_BACKOFF_SECONDS + 1
    assert r.llen(MONITOR_OUTBOX) == 0
    dead = [json.loads(m)["subject"] for m in r.lrange(MONITOR_OUTBOX_DEAD, 0, -1)]
    assert dead == ["[cdpipe] refuse-me"]
    assert maildir_subjects(maildir) == sorted(
        ["[cdpipe] one"] + [f"[cdpipe] round {i}" for i in range(MAX_TRIES)])
    assert sum("set aside" in rec.getMessage() for rec in caplog.records) == 1


def test_outbox_junk_that_is_not_utf8_is_set_aside_once(
        redis_server, raw_redis, smtp, caplog) -> None:  # type: ignore[no-untyped-def]
    smtp_port, maildir = smtp
    monitor = monitor_for(redis_server, smtp_port)
    junk = b"\xff\xfe not a message"
    raw_redis.rpush(MONITOR_OUTBOX, junk, message("[cdpipe] after junk", "b").encode())
    for _ in range(3):
        deliver_due(monitor.r, monitor.cfg.smtp)
    # Read back byte for byte: removed from the outbox, kept once in the dead letters.
    assert raw_redis.lrange(MONITOR_OUTBOX, 0, -1) == []
    assert raw_redis.lrange(MONITOR_OUTBOX_DEAD, 0, -1) == [junk]
    assert maildir_subjects(maildir) == ["[cdpipe] after junk"]
    assert sum("set aside" in rec.getMessage() for rec in caplog.records) == 1


def test_hostile_alert_states_read_as_none(redis_server, smtp) -> None:  # type: ignore[no-untyped-def]
    monitor = monitor_for(redis_server, smtp[0])
    monitor.r.hset(MONITOR_ALERTS, mapping={"instance-down/x": "{not json",
                                            "cpu": json.dumps({"state": "firing"}),
                                            "odd": json.dumps({"state": "exploded", "count": 1,
                                                               "since": 0, "last_sent": 0,
                                                               "summary": ""})})
    assert monitor.alerts.load() == {}
    assert monitor.alerts.observe("cpu", True, 1, "cpu high") == "firing"
    monitor.alerts.forget_missing(set(), "instance-down/")  # its instance is gone
    assert sorted(monitor.r.hkeys(MONITOR_ALERTS)) == ["cpu", "odd"]
    assert monitor.alerts.observe("odd", False, 1, "") is None  # clear: removed
    assert monitor.r.hkeys(MONITOR_ALERTS) == ["cpu"]


def test_the_controller_reads_only_valid_entries_once_logged(
        redis_server, raw_redis, caplog) -> None:  # type: ignore[no-untyped-def]
    port, password = redis_server
    write_hostile(raw_redis, {"prod-1": "127.0.0.1:8001"})
    raw_redis.hset(servers_key("canary"), "canary-1", "127.0.0.1:8002")
    raw_redis.set(CANARY_WEIGHT, "²")  # int('²') raised ValueError: the controller died
    raw_redis.set(CANARY_ALERT, b"\xff" * 10)
    client = redis.Redis(port=port, password=password, decode_responses=True,
                         encoding_errors=DECODE_ERRORS)  # as the controller connects
    with caplog.at_level(logging.WARNING):
        for _ in range(5):
            desired = read_desired(client)
            assert sorted(desired.servers) == ["canary-1", "prod-1"]
            assert desired.canary_weight == 33 and desired.canary_alert is True
    skipped = [r.getMessage() for r in caplog.records if "invalid entry" in r.getMessage()]
    assert len(skipped) == len(HOSTILE)


def test_the_apps_flag_cache_reads_hostile_flags_safely(redis_server, raw_redis, caplog) -> None:  # type: ignore[no-untyped-def]
    port, password = redis_server
    raw_redis.set(flag_key("hiddenfeature"), b"x" * MB)
    raw_redis.set(flag_key("evil\r\n\x1b[31m"), b"on")
    raw_redis.set(flag_key("beta"), b"\xff\xfe")
    raw_redis.set(flag_key("gamma"), b"on")
    cache = FlagCache(f"redis://default:{password}@127.0.0.1:{port}/0", resync_seconds=0.2)
    try:
        with caplog.at_level(logging.WARNING):
            assert cache.enabled("gamma") is True
            assert cache.enabled("hiddenfeature", "u") is False
            assert cache.enabled("beta", "u") is False
            raw_redis.set(flag_key("gamma"), b"off")
            wait_until(lambda: not cache.enabled("gamma"), 10, "gamma off")
            raw_redis.set(flag_key("gamma"), b"on")
            wait_until(lambda: cache.enabled("gamma"), 10, "gamma on again")
        invalid = [r.getMessage() for r in caplog.records if "invalid value" in r.getMessage()]
        assert len(invalid) == 2  # hiddenfeature and beta, once each over several resyncs
        assert all(len(line) < 400 for line in invalid)
        assert cache.connected
    finally:
        cache.close()
