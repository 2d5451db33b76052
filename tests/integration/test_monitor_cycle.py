"""The monitor against real servers: metric endpoints over HTTP (one slow, one dead),
redis-server for its state, and the Maildir SMTP sink."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from devkit import free_port
from monitoring.config import MonitorConfig
from monitoring.mailer import deliver_due
from monitoring.mailsink import MaildirHandler
from monitoring.monitor import Monitor
from tests.support import maildir_subjects as subjects
from tests.support import wait_until

CPU = {"value": 10.0}
# The slow endpoint answers after 3 s, or once a test releases it; it says when it did.
SLOW_RELEASE, SLOW_ANSWERED = threading.Event(), threading.Event()


class Metrics(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path.startswith("/slow"):
            SLOW_RELEASE.wait(3)  # the scenario's slowness, not a wait of the test
            SLOW_ANSWERED.set()
        body = f"instance_cpu_percent {CPU['value']}\ninstance_memory_percent 1\n".encode()
        try:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # a late answer of the slow endpoint: the monitor gave up on it

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(autouse=True)
def idle_cpu() -> Iterator[None]:
    """Every test starts and ends with the endpoints reporting an idle CPU."""
    CPU["value"] = 10.0
    yield
    CPU["value"] = 10.0


@pytest.fixture(autouse=True)
def slow_endpoint() -> Iterator[None]:
    """The slow endpoint holds its answers during each test, and lets them go after."""
    SLOW_RELEASE.clear()
    SLOW_ANSWERED.clear()
    yield
    SLOW_RELEASE.set()


@pytest.fixture
def endpoint() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Metrics)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    port = free_port()
    controller = Controller(MaildirHandler(tmp_path / "Maildir"), hostname="127.0.0.1",
                            port=port)
    controller.start()
    yield port, tmp_path / "Maildir"
    controller.stop()


def config(redis_server: tuple[int, str], endpoint: int, smtp_port: int) -> MonitorConfig:
    port, password = redis_server
    dead = free_port()
    return MonitorConfig.model_validate({
        "interval_seconds": 1, "timeout_seconds": 1, "down_after_polls": 2,
        "redis_url": f"redis://:{password}@127.0.0.1:{port}/0",
        "targets": [
            {"id": "prod-1", "role": "prod", "url": f"http://127.0.0.1:{endpoint}/metrics"},
            {"id": "prod-2", "role": "prod", "url": f"http://127.0.0.1:{endpoint}/slow"},
            {"id": "redis-1", "role": "redis", "url": f"http://127.0.0.1:{dead}/metrics"},
        ],
        "discover_roles": [],
        "smtp": {"host": "127.0.0.1", "port": smtp_port},
        "rules": [{"name": "cpu", "metric": "cpu_percent", "role": "prod",
                   "aggregate": "each", "upper": 50, "for": 2}],
        "canary": {"enabled": False},
    })


def run_cycles(monitor: Monitor, count: int) -> list[int]:
    """`count` poll cycles, each followed by a mail delivery round; mails sent per round."""
    sent = []
    for _ in range(count):
        asyncio.run(monitor.cycle())
        sent.append(deliver_due(monitor.r, monitor.cfg.smtp))
    return sent


def test_slow_and_dead_targets_do_not_delay_the_others(redis_server, endpoint, smtp) -> None:  # type: ignore[no-untyped-def]
    monitor = Monitor(config(redis_server, endpoint, smtp[0]))
    samples = asyncio.run(monitor.cycle())
    slow_had_answered = SLOW_ANSWERED.is_set()
    by_id = {s.target_id: s for s in samples}
    assert by_id["prod-1"].ok
    assert not by_id["prod-2"].ok and "Timeout" in by_id["prod-2"].error
    assert not by_id["redis-1"].ok
    # The cycle ended while the slow endpoint still held its answer: it is bounded by the
    # monitor's timeout, not by the endpoint. Its seconds: bench/settle_times.py.
    assert not slow_had_answered


def test_alert_fires_once_resolves_once_and_survives_restarts(
        redis_server, endpoint, smtp) -> None:  # type: ignore[no-untyped-def]
    smtp_port, maildir = smtp
    cfg = config(redis_server, endpoint, smtp_port)
    monitor = Monitor(cfg)
    CPU["value"] = 90.0
    run_cycles(monitor, 4)
    fired = subjects(maildir)
    assert fired.count("[cdpipe] FIRING cpu/prod-1") == 1
    assert fired.count("[cdpipe] FIRING instance-down/redis-1") == 1
    again = Monitor(cfg)  # a restarted monitor: same Redis, nothing re-sent
    run_cycles(again, 3)
    assert subjects(maildir).count("[cdpipe] FIRING cpu/prod-1") == 1
    # One clear poll between hot ones is a flap: no resolved mail, no second firing.
    CPU["value"] = 5.0
    run_cycles(again, 1)
    CPU["value"] = 90.0
    run_cycles(again, 2)
    assert "[cdpipe] RESOLVED cpu/prod-1" not in subjects(maildir)
    assert subjects(maildir).count("[cdpipe] FIRING cpu/prod-1") == 1
    # Clear for `keep_firing_for` polls (default: `for`, 2 here): resolved, once.
    CPU["value"] = 5.0
    run_cycles(again, 1)
    assert "[cdpipe] RESOLVED cpu/prod-1" not in subjects(maildir)
    run_cycles(again, 2)
    assert subjects(maildir).count("[cdpipe] RESOLVED cpu/prod-1") == 1


def test_keep_firing_for_sets_how_many_clear_polls_resolve(
        redis_server, endpoint, smtp) -> None:  # type: ignore[no-untyped-def]
    smtp_port, maildir = smtp
    cfg = config(redis_server, endpoint, smtp_port)
    cfg.rules[0].keep_firing_for = 3
    monitor = Monitor(cfg)
    CPU["value"] = 90.0
    run_cycles(monitor, 2)
    assert subjects(maildir).count("[cdpipe] FIRING cpu/prod-1") == 1
    CPU["value"] = 5.0
    run_cycles(monitor, 2)
    assert "[cdpipe] RESOLVED cpu/prod-1" not in subjects(maildir)
    run_cycles(monitor, 1)
    assert subjects(maildir).count("[cdpipe] RESOLVED cpu/prod-1") == 1


def test_mail_is_kept_until_the_smtp_server_answers(redis_server, endpoint, tmp_path) -> None:  # type: ignore[no-untyped-def]
    smtp_port = free_port()  # nothing listens yet
    cfg = config(redis_server, endpoint, smtp_port)
    monitor = Monitor(cfg)
    CPU["value"] = 90.0
    assert run_cycles(monitor, 2) == [0, 0]
    # The CPU alert's mail is queued (the dead target's instance-down mail always is: a
    # non-empty outbox alone would prove nothing about this one).
    queued = [json.loads(m)["subject"] for m in monitor.r.lrange("monitor:outbox", 0, -1)]
    assert "[cdpipe] FIRING cpu/prod-1" in queued
    controller = Controller(MaildirHandler(tmp_path / "late"), hostname="127.0.0.1",
                            port=smtp_port)
    controller.start()
    try:
        def delivered() -> bool:  # a delivery round, as the monitor runs after each poll
            deliver_due(monitor.r, cfg.smtp)
            return monitor.r.llen("monitor:outbox") == 0
        wait_until(delivered, 15, "the outbox delivered once SMTP answers (retries back off)",
                   interval=0.2)
        assert "[cdpipe] FIRING cpu/prod-1" in subjects(tmp_path / "late")
        assert monitor.r.llen("monitor:outbox") == 0
    finally:
        controller.stop()


def test_each_cycle_records_the_polls_for_the_dashboard(redis_server, endpoint, smtp) -> None:  # type: ignore[no-untyped-def]
    """monitor:samples after real polls: the answering target's gauges, the slow and
    dead ones as failed polls (null gauges), kept by a restarted monitor."""
    from cdpipe.records import read_samples

    cfg = config(redis_server, endpoint, smtp[0])
    run_cycles(Monitor(cfg), 2)
    CPU["value"] = 42.0
    run_cycles(Monitor(cfg), 1)  # restarted
    samples = read_samples(Monitor(cfg).r)
    assert set(samples) == {"prod-1", "prod-2", "redis-1"}
    assert samples["prod-1"]["cpu"] == [10.0, 10.0, 42.0]
    assert samples["prod-1"]["mem"] == [1.0, 1.0, 1.0] and samples["prod-1"]["ok"]
    assert samples["prod-2"]["cpu"] == [None] * 3 and "Timeout" in samples["prod-2"]["error"]
    assert not samples["redis-1"]["ok"] and samples["redis-1"]["role"] == "redis"
    times = samples["prod-1"]["t"]
    assert times == sorted(times) and len(set(times)) == 3
