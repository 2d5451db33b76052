"""The one validator of names and addresses read from Redis (cdpipe_host.names), how
hostile values are shown, and the values of the contract's keys (ASCII digits only)."""

from __future__ import annotations

import logging

import pytest

from cdpipe_host.flagvalues import InvalidFlagValue, parse
from cdpipe_host.names import (
    OnceLog,
    address_problem,
    flag_name_problem,
    instance_id_problem,
    one_line,
    server_entries,
    shown,
)
from cdpipe_host.values import valid_weight

MB = 1024 * 1024


@pytest.mark.parametrize("name", ["prod-1", "canary-1", "i-0abc123def", "a", "x" * 64,
                                  "prod_2.eu"])
def test_instance_ids(name: str) -> None:
    assert instance_id_problem(name) is None


@pytest.mark.parametrize("name", ["", "evil\r\nSubject: x", "x" * 65, "a" * MB, "-x", ".x",
                                  "prod 1", "prod\t1", "préprod", "prod\u2028", "esc\x1b[31m",
                                  "prod-1\n", "\ufffd"])
def test_not_instance_ids(name: str) -> None:
    assert instance_id_problem(name) is not None


@pytest.mark.parametrize("address", ["127.0.0.1:8000", "10.0.3.17:1", "10.0.3.17:65535",
                                     "ip-10-0-3-17.ec2.internal:8000", "localhost:80",
                                     "[::1]:8000", "[fe80::1]:443"])
def test_addresses(address: str) -> None:
    assert address_problem(address) is None


@pytest.mark.parametrize(("address", "why"), [
    ("127.0.0.1", "not host:port"),
    (":8000", "not host:port"),
    ("127.0.0.1:0", "port"),
    ("127.0.0.1:65536", "port"),
    ("127.0.0.1:" + "9" * MB, "port"),
    ("127.0.0.1:\uff18\uff10", "port"),         # digits of another script
    ("127.0.0.1:+80", "port"),
    ("127.0.0.1:80\r\n", "port"),
    ("127.0.0.1:1\r\nserver x 10.0.0.1:80", "DNS"),
    ("256.0.0.1:80", "IPv4"),
    ("1.2.3:80", "IPv4"),
    ("host name:80", "DNS"),
    ("host\r\nSubject: x:80", "DNS"),
    ("-host:80", "DNS"),
    ("a" * 300 + ":80", "longer"),
    ("[::g]:80", "IPv6"),
    ("::1:80", "DNS"),                   # IPv6 without brackets: ambiguous
    ("ex\u0430mple.com:80", "DNS"),      # a Cyrillic a
])
def test_not_addresses(address: str, why: str) -> None:
    problem = address_problem(address)
    assert problem is not None and why in problem


def test_flag_names() -> None:
    assert flag_name_problem("hiddenfeature") is None
    assert flag_name_problem("new-checkout_v2.1") is None
    for bad in ("", "a b", "evil\r\n", "x" * 65, "\x1b[31m", "*"):
        assert flag_name_problem(bad) is not None


def test_shown_escapes_and_cuts() -> None:
    assert shown("prod-1") == "'prod-1'"
    assert shown("evil\r\nSubject: x") == r"'evil\r\nSubject: x'"
    big = shown("a" * MB)
    assert big.startswith("'aaaa") and big.endswith(f"... ({MB} characters)")
    assert len(big) < 100
    assert "\x1b" not in shown("\x1b[2J")


def test_one_line_escapes_control_characters_and_cuts() -> None:
    assert one_line("plain message: ok") == "plain message: ok"
    assert one_line("a\nb\r\x1b[31m\x00") == r"a\nb\r\x1b[31m\x00"
    assert "\n" not in one_line("x\n" * MB) and len(one_line("x\n" * MB)) < 500


def test_once_log_logs_each_problem_once(caplog: pytest.LogCaptureFixture) -> None:
    once = OnceLog(logging.getLogger("test.once"), limit=3)
    with caplog.at_level(logging.WARNING):
        assert once.warning(("k", "a"), "problem a") is True
        assert once.warning(("k", "a"), "problem a") is False
        assert once.warning(("k", "b" * MB), "problem b") is True
        assert once.warning(("k", "b" * MB), "problem b") is False
    assert [r.getMessage() for r in caplog.records] == ["problem a", "problem b"]
    # A flood of distinct problems does not grow it past its limit: it starts again.
    for i in range(10):
        once.warning(("k", str(i)), f"flood {i}")
    assert len(once.seen) <= 3


def test_server_entries_keeps_the_valid_and_logs_each_invalid_once(
        caplog: pytest.LogCaptureFixture) -> None:
    once = OnceLog(logging.getLogger("test.entries"))
    entries = {"prod-1": "127.0.0.1:8001", "evil\r\nSubject: x": "127.0.0.1:1",
               "prod-2": "127.0.0.1:99999", "a" * MB: "127.0.0.1:1",
               "prod-3": "10.0.0.3:8000"}
    with caplog.at_level(logging.WARNING):
        for _ in range(5):  # five polls
            valid = server_entries("servers:prod", entries, once)
            assert valid == {"prod-1": "127.0.0.1:8001", "prod-3": "10.0.0.3:8000"}
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3
    assert any(r"'evil\r\nSubject: x'='127.0.0.1:1' in servers:prod (not an instance id"
               in line for line in lines)
    assert any("'prod-2'='127.0.0.1:99999' in servers:prod (port" in line for line in lines)
    assert all(len(line) < 400 and "\n" not in line for line in lines)


@pytest.mark.parametrize(("raw", "weight"), [("33", 33), (" 0 ", 0), ("100", 100),
                                             ("50%", 50), ("²", None), ("\uff11\uff10", None),
                                             ("101", None), ("-1", None), ("5%%", None),
                                             ("9" * MB, None), ("10\x00", None)])
def test_weights_are_ascii_digits(raw: str, weight: int | None) -> None:
    assert valid_weight(raw) == weight


@pytest.mark.parametrize("raw", ["1_0%", "\uff11\uff10%", "nan%", "inf%", "1e1%", "+5%", "5 %",
                                 "50%\x00", "x" * MB, "9" * MB + "%"])
def test_flag_percents_are_plain_decimals(raw: str) -> None:
    with pytest.raises(InvalidFlagValue):
        parse(raw)


@pytest.mark.parametrize(("raw", "percent"), [("12.5%", 12.5), ("50.%", 50.0),
                                              (".5%", 0.5), ("100%", 100.0)])
def test_flag_percents(raw: str, percent: float) -> None:
    assert parse(raw).percent == percent
