"""Redis as the control panel of the running system, end to end on the real stack."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.e2e.conftest import LocalEnv
from tests.e2e.load import Load, count_requests, share
from tests.support import free_port

pytestmark = pytest.mark.e2e


def app_urls(env: LocalEnv) -> list[str]:
    return [env.url(2), env.url(3)]  # prod-1, canary-1


def wait_all(urls: list[str], path: str, code: int, timeout: float = 2.0) -> float:
    """Seconds until every URL answers `code` on `path`."""
    started = time.monotonic()
    pending = set(urls)
    with requests.Session() as session:
        while pending and time.monotonic() - started < timeout:
            for url in list(pending):
                if session.get(url + path, timeout=2).status_code == code:
                    pending.discard(url)
    assert not pending, f"{pending} never answered {code} on {path}"
    return time.monotonic() - started


@pytest.fixture
def r(local_env: LocalEnv) -> Iterator:  # type: ignore[type-arg]
    client = local_env.redis()
    yield client
    client.delete("flag:hiddenfeature", "canary:alert", "canary:weight")
    wait_all([local_env.url(3)], "/hiddenfeature", 404)


def test_flag_reaches_every_instance_within_100ms(local_env: LocalEnv, r) -> None:  # type: ignore[no-untyped-def]
    urls = app_urls(local_env)
    r.set("flag:hiddenfeature", "on")
    assert wait_all(urls, "/hiddenfeature", 200) < 0.1
    r.set("flag:hiddenfeature", "off")
    assert wait_all(urls, "/hiddenfeature", 404) < 0.1


def test_percentage_flag_through_the_proxy(local_env: LocalEnv, r) -> None:  # type: ignore[no-untyped-def]
    r.set("flag:hiddenfeature", "10%")
    time.sleep(0.2)
    url = local_env.proxy_url + "/hiddenfeature"
    answers: dict[int, int] = {}
    with requests.Session() as session:
        for n in range(2000):
            answers[n] = session.get(url, headers={"X-User-Id": f"user-{n}"}, timeout=5).status_code
        assert set(answers.values()) <= {200, 404}
        on = sum(code == 200 for code in answers.values()) / len(answers)
        assert 0.07 <= on <= 0.13, on
        again = {n: session.get(url, headers={"X-User-Id": f"user-{n}"}, timeout=5).status_code
                 for n in range(0, 2000, 4)}
    assert all(answers[n] == code for n, code in again.items())


def test_canary_kill_switch_under_load(local_env: LocalEnv, r) -> None:  # type: ignore[no-untyped-def]
    with Load(local_env.proxy_url + "/", threads=4, max_seconds=30) as load:
        time.sleep(1.0)
        assert share(load.since(0), "canary") > 0.2
        t0 = time.monotonic()
        r.set("canary:alert", "on")
        time.sleep(1.5)
    late = [s for s in load.samples if s.started >= t0 + 0.1]
    assert len(late) > 100
    assert [s for s in late if s.role == "canary"] == []
    assert load.failures() == []
    r.set("canary:alert", "off")
    time.sleep(0.2)
    samples = count_requests(local_env.proxy_url + "/", 3000)
    assert [s for s in samples if s.status != 200] == []
    assert abs(share(samples, "canary") - 0.33) <= 0.02


def test_canary_weight_follows_redis(local_env: LocalEnv, r) -> None:  # type: ignore[no-untyped-def]
    r.set("canary:weight", "10")
    time.sleep(0.2)
    samples = count_requests(local_env.proxy_url + "/", 3000)
    assert [s for s in samples if s.status != 200] == []
    assert abs(share(samples, "canary") - 0.10) <= 0.02


def test_sticky_cookie_keeps_a_user_on_one_version(local_env: LocalEnv) -> None:
    with requests.Session() as session:
        first = session.get(local_env.proxy_url + "/", timeout=5).json()["instance"]
        seen = {session.get(local_env.proxy_url + "/", timeout=5).json()["instance"]
                for _ in range(30)}
    assert seen == {first}


def test_alert_moves_sticky_users_off_the_canary(local_env: LocalEnv, r) -> None:  # type: ignore[no-untyped-def]
    with requests.Session() as session:
        while session.get(local_env.proxy_url + "/", timeout=5).json()["role"] != "canary":
            session.cookies.clear()
        r.set("canary:alert", "on")
        time.sleep(0.1)
        roles = {session.get(local_env.proxy_url + "/", timeout=5).json()["role"]
                 for _ in range(10)}
    assert roles == {"prod"}


@pytest.fixture
def extra_server(local_env: LocalEnv) -> Iterator[tuple[str, str]]:
    """A third app server (gunicorn on the scratch repository) outside the inventory."""
    port = free_port()
    redis_url = json.loads(local_env.cdpipe("status", "--json").stdout)["redis"]["url"]
    env = dict(os.environ, APP_INSTANCE_ID="extra-1", APP_ROLE="prod", APP_REDIS_URL=redis_url)
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "--bind", f"127.0.0.1:{port}",
         "--worker-class", "gthread", "--threads", "4", "--chdir", str(local_env.repo),
         "app:create_app()"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok:
                    break
            except requests.RequestException:
                time.sleep(0.1)
        yield "extra-1", f"127.0.0.1:{port}"
    finally:
        local_env.redis().hdel("servers:prod", "extra-1")
        proc.terminate()
        proc.wait(15)


def test_server_added_then_removed_under_load(local_env: LocalEnv, extra_server) -> None:  # type: ignore[no-untyped-def]
    name, address = extra_server
    r = local_env.redis()
    with Load(local_env.proxy_url + "/", threads=4, max_seconds=40) as load:
        r.hset("servers:prod", name, address)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not any(
                s.instance == name for s in load.samples[-200:]):
            time.sleep(0.1)
        assert any(s.instance == name for s in load.samples), "never put into rotation"
        t_removed = time.monotonic()
        r.hdel("servers:prod", name)
        time.sleep(3)
    late = [s for s in load.samples if s.started > t_removed + 0.5]
    assert late and not any(s.instance == name for s in late)
    assert load.failures() == []
    cfg = (local_env.home / "instances" / "proxy-1" / "haproxy" / "haproxy.cfg").read_text()
    assert name not in cfg


def test_redis_down_keeps_serving_then_catches_up(local_env: LocalEnv, r) -> None:  # type: ignore[no-untyped-def]
    r.set("flag:hiddenfeature", "on")
    wait_all(app_urls(local_env), "/hiddenfeature", 200)
    local_env.supervisorctl("redis-1", "stop", "redis")
    try:
        time.sleep(1.5)  # readers notice the outage
        with requests.Session() as session:
            codes = [session.get(local_env.proxy_url + "/hiddenfeature", timeout=5).status_code
                     for _ in range(100)]
        samples = count_requests(local_env.proxy_url + "/", 100)
        assert codes == [200] * 100
        assert all(s.status == 200 for s in samples)
        assert {s.role for s in samples} == {"prod", "canary"}
        health = requests.get(local_env.url(2) + "/healthz", timeout=2).json()
        assert health["redis"] == "down" and health["flags"] == "last known values"
    finally:
        local_env.supervisorctl("redis-1", "start", "redis")
    client = local_env.redis()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        client.set("flag:hiddenfeature", "off")
        try:
            wait_all(app_urls(local_env), "/hiddenfeature", 404, timeout=0.5)
            break
        except AssertionError:
            continue
    else:
        pytest.fail("flags did not catch up after Redis came back")
    client.set("canary:alert", "on")
    time.sleep(0.3)
    assert {s.role for s in count_requests(local_env.proxy_url + "/", 30)} == {"prod"}


def test_invalid_values_give_safe_defaults(local_env: LocalEnv, r) -> None:  # type: ignore[no-untyped-def]
    r.set("flag:hiddenfeature", "maybe")
    r.set("canary:weight", "lots")
    time.sleep(0.3)
    assert {requests.get(u + "/hiddenfeature", timeout=2).status_code
            for u in app_urls(local_env)} == {404}
    samples = count_requests(local_env.proxy_url + "/", 600)
    assert all(s.status == 200 for s in samples)
    assert abs(share(samples, "canary") - 0.33) <= 0.06  # weight: the default
    log = (local_env.home / "instances" / "prod-1" / "logs" / "app.log").read_text()
    assert log.count("invalid value 'maybe' for flag:hiddenfeature") == 1
    r.set("canary:alert", "perhaps")  # invalid alert: the safe side is "on"
    time.sleep(0.3)
    assert {s.role for s in count_requests(local_env.proxy_url + "/", 30)} == {"prod"}


def test_cli_flags_and_canary_status(local_env: LocalEnv, r) -> None:  # type: ignore[no-untyped-def]
    out = local_env.cdpipe("flag", "set", "hiddenfeature", "maybe", check=False)
    assert out.returncode == 1 and "invalid value 'maybe'" in out.stderr
    local_env.cdpipe("flag", "set", "hiddenfeature", "ON")
    assert r.get("flag:hiddenfeature") == "on"
    assert "hiddenfeature\ton" in local_env.cdpipe("flag", "list").stdout
    local_env.cdpipe("canary", "alert")
    assert r.get("canary:alert") == "on"
    report = json.loads(local_env.cdpipe("canary", "status", "--json").stdout)
    assert report["alert"] is True and report["weight"] == 33
    by_role = {s["role"]: s for s in report["servers"]}
    assert by_role["canary"]["status"] == "MAINT"
    assert by_role["prod"]["requests"] > 0 and "5xx" in by_role["prod"]
    out = local_env.cdpipe("canary", "promote", check=False)
    assert out.returncode == 1 and "canary alert is on" in out.stderr
    local_env.cdpipe("canary", "clear")
    assert r.get("canary:alert") == "off"


def test_promote_and_rollback_under_load(local_env: LocalEnv) -> None:
    local_env.cdpipe("deploy", "--ref", local_env.old, "--target", "canary")
    with Load(local_env.proxy_url + "/", threads=3, max_seconds=120) as load:
        local_env.cdpipe("canary", "promote")
    assert load.failures() == []
    assert len(load.samples) > 100
    versions = {i["id"]: i["version"]
                for i in json.loads(local_env.cdpipe("status", "--json").stdout)["instances"]
                if i["version"]}
    assert versions == {"prod-1": local_env.old, "canary-1": local_env.old}
    local_env.cdpipe("deploy", "--ref", local_env.new, "--target", "prod")
    local_env.cdpipe("canary", "rollback")
    versions = {i["id"]: i["version"]
                for i in json.loads(local_env.cdpipe("status", "--json").stdout)["instances"]
                if i["version"]}
    assert versions == {"prod-1": local_env.new, "canary-1": local_env.new}
