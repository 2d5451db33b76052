"""The proxy host's one-shot commands (what Ansible runs there) against a real
redis-server: the canary's initial weight, register, and drain with its guard."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from cdpipe_host.keys import CANARY_ALERT, CANARY_WEIGHT, servers_key


@pytest.fixture
def proxy_cli(redis_server: tuple[int, str], tmp_path: Path):  # type: ignore[no-untyped-def]
    """Runs ``python -m cdpipe_host.proxy CONFIG ...``; no HAProxy runs, so the waits for
    a server to leave see it gone at once, and registering is tried with --no-wait."""
    port, password = redis_server
    config = tmp_path / "controller.json"
    config.write_text(json.dumps({
        "redis_url": f"redis://default:{password}@127.0.0.1:{port}/0",
        "base_file": str(tmp_path / "base.cfg"), "config_file": str(tmp_path / "haproxy.cfg"),
        "socket": str(tmp_path / "none.sock"), "cookie_key": "test-key",
        "reload_command": "true"}))
    r = redis.Redis(port=port, password=password, decode_responses=True)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "cdpipe_host.proxy", str(config), *args],
                              capture_output=True, text=True, timeout=30, check=False)
    return run, r


def test_initial_weight_is_set_once_and_an_operators_value_stays(proxy_cli) -> None:  # type: ignore[no-untyped-def]
    run, r = proxy_cli
    assert run("init-weight", "10").stdout.strip() == "changed"
    assert r.get(CANARY_WEIGHT) == "10"
    r.set(CANARY_WEIGHT, "25")  # the operator's choice
    assert run("init-weight", "10").stdout.strip() == "unchanged"
    assert r.get(CANARY_WEIGHT) == "25"
    bad = run("init-weight", "150")
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


def test_register_is_idempotent(proxy_cli) -> None:  # type: ignore[no-untyped-def]
    run, r = proxy_cli
    args = ("register", "prod-1", "--role", "prod", "--address", "127.0.0.1:9001", "--no-wait")
    assert run(*args).stdout.strip() == "changed"
    assert run(*args).stdout.strip() == "unchanged"
    assert r.hgetall(servers_key("prod")) == {"prod-1": "127.0.0.1:9001"}


def test_drain_refuses_to_empty_the_backend(proxy_cli) -> None:  # type: ignore[no-untyped-def]
    run, r = proxy_cli
    r.hset(servers_key("prod"), "prod-1", "127.0.0.1:9001")
    r.hset(servers_key("canary"), "canary-1", "127.0.0.1:9002")
    r.set(CANARY_ALERT, "on")  # the canary takes no traffic: prod-1 is all there is
    refused = run("drain", "prod-1", "--role", "prod", "--timeout", "1")
    assert refused.returncode == 3
    assert "would leave no server in rotation" in refused.stderr
    assert r.hget(servers_key("prod"), "prod-1") == "127.0.0.1:9001"
    r.set(CANARY_ALERT, "off")
    drained = run("drain", "prod-1", "--role", "prod", "--timeout", "1")
    assert (drained.returncode, drained.stdout.strip()) == (0, "changed")
    assert r.hget(servers_key("prod"), "prod-1") is None
    # The canary is the last server in rotation now: draining it is refused too.
    assert run("drain", "canary-1", "--role", "canary", "--timeout", "1").returncode == 3
    assert run("drain", "prod-1", "--role", "prod").stdout.strip() == "unchanged"


def test_a_promotes_drain_stops_once_the_canary_alert_is_on(proxy_cli) -> None:  # type: ignore[no-untyped-def]
    """The judge fails the canary while a promote rolls prod: the next server is not
    drained (exit 4, its entry stays) and the promote stops there; a plain drain (a
    deploy) goes on, and so does the promote's once the alert is off."""
    run, r = proxy_cli
    for name, port in (("prod-1", 9001), ("prod-2", 9002)):
        r.hset(servers_key("prod"), name, f"127.0.0.1:{port}")
    r.set(CANARY_ALERT, "on")
    stopped = run("drain", "prod-1", "--role", "prod", "--timeout", "1",
                  "--unless-canary-alert")
    assert stopped.returncode == 4, stopped.stderr
    assert "canary:alert is on: stopped before draining prod-1" in stopped.stderr
    assert r.hget(servers_key("prod"), "prod-1") == "127.0.0.1:9001"
    assert run("drain", "prod-1", "--role", "prod", "--timeout", "1").returncode == 0
    r.hset(servers_key("prod"), "prod-1", "127.0.0.1:9001")
    r.set(CANARY_ALERT, "off")
    going = run("drain", "prod-2", "--role", "prod", "--timeout", "1", "--unless-canary-alert")
    assert (going.returncode, going.stdout.strip()) == (0, "changed")


@pytest.mark.parametrize(("server", "address"), [("evil\r\nSubject: x", "127.0.0.1:9001"),
                                                 ("prod-1", "127.0.0.1:99999"),
                                                 ("prod-1", "127.0.0.1:1\nserver x y:1"),
                                                 ("p" * 100_000, "127.0.0.1:9001")])
def test_register_refuses_what_readers_would_skip(proxy_cli, server: str, address: str) -> None:  # type: ignore[no-untyped-def]
    run, r = proxy_cli
    out = run("register", server, "--role", "prod", "--address", address, "--no-wait")
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.startswith("error: invalid entry") and out.stderr.count("\n") == 1
    assert len(out.stderr) < 600
    assert r.hgetall(servers_key("prod")) == {}


def test_render_shows_haproxys_own_message(proxy_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A base HAProxy refuses: render fails with HAProxy's reason, the old file stays."""
    run, r = proxy_cli
    base = ("global\n    maxconn 10\ndefaults\n    mode http\n    timeout connect 1s\n"
            "    timeout client 1s\n    timeout server 1s\nfrontend www\n"
            "    bind 127.0.0.1:1\n    default_backend app\nbackend app\n")
    (tmp_path / "base.cfg").write_text(base)
    r.hset(servers_key("prod"), "prod-1", "127.0.0.1:9001")
    assert run("render").stdout.strip() == "changed"
    good = (tmp_path / "haproxy.cfg").read_text()
    (tmp_path / "base.cfg").write_text(base.replace("    mode http\n",
                                                    "    mode http\n    bogus_keyword on\n"))
    refused = run("render")
    assert refused.returncode == 1
    assert "unknown keyword 'bogus_keyword' in 'defaults' section" in refused.stderr
    assert (tmp_path / "haproxy.cfg").read_text() == good
