"""The monitor's outbox when Redis refuses writes (out of memory) while the SMTP server is
down too, against a real redis-server and a real SMTP server: a failed delivery puts the
mail back with its next try, and must not take it out without putting it back (LREM is
allowed under maxmemory, LPUSH is refused)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis
from aiosmtpd.controller import Controller

from devkit import free_port
from monitoring.config import Smtp
from monitoring.mailer import OUTBOX, deliver_due, message
from monitoring.mailsink import MaildirHandler
from tests.support import maildir_subjects


def test_failed_delivery_under_oom_keeps_the_mail(redis_server: tuple[int, str],
                                                  tmp_path: Path) -> None:
    port, password = redis_server
    r = redis.Redis(port=port, password=password, decode_responses=True)
    smtp = Smtp(port=free_port(), timeout_seconds=2)  # nothing listens there yet
    r.rpush(OUTBOX, message("[cdpipe] FIRING instance-down/web-1", "Firing: web-1\n"))
    r.config_set("maxmemory", "1")  # noeviction: every write that may grow is refused
    try:
        with pytest.raises(redis.RedisError):
            deliver_due(r, smtp)  # SMTP refused, then Redis refuses the retry's write
        assert [json.loads(m)["subject"] for m in r.lrange(OUTBOX, 0, -1)] == [
            "[cdpipe] FIRING instance-down/web-1"]
    finally:
        r.config_set("maxmemory", "0")
    sink = Controller(MaildirHandler(tmp_path / "Maildir"), hostname="127.0.0.1",
                      port=smtp.port)
    sink.start()
    try:
        assert deliver_due(r, smtp) == 1
    finally:
        sink.stop()
    assert r.llen(OUTBOX) == 0
    assert maildir_subjects(tmp_path / "Maildir") == ["[cdpipe] FIRING instance-down/web-1"]
