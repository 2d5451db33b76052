"""The dashboard in a real browser (Debian's Chromium driven by Playwright) against the
session's local environment: what the operator sees and does there reaches production
through the same code as the CLI, live, behind the operator's login."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from playwright.sync_api import Browser, Page, expect, sync_playwright

from cdpipe.redis_users import OPERATOR, password_name
from devkit import free_port
from devkit.dashboard import Dashboard, dashboard_process, launch
from tests.e2e.conftest import LocalEnv
from tests.e2e.load import Load, share
from tests.e2e.observe import wait_held_out
from tests.support import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("clean_env")]

# Where the test leaves its screenshot of the page for the README (docs/dashboard.png
# when set so: `CDPIPE_DASHBOARD_SCREENSHOT=docs/dashboard.png pytest ...`).
SCREENSHOT = os.environ.get("CDPIPE_DASHBOARD_SCREENSHOT")


@pytest.fixture(scope="module")
def dashboard(local_env: LocalEnv, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[Dashboard]:
    log = tmp_path_factory.mktemp("dashboard") / "dashboard.log"
    with dashboard_process(local_env.env, free_port(), log) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = launch(playwright)
        yield chromium
        chromium.close()


def operator_password(env: LocalEnv) -> str:
    return (env.home / "secrets" / password_name(OPERATOR)).read_text().strip()


def open_page(browser: Browser, dashboard: Dashboard, width: int = 1280,
              height: int = 720) -> Page:
    page = browser.new_context(viewport={"width": width, "height": height}).new_page()
    page.goto(dashboard.url)
    expect(page.locator("#connection")).to_have_text("live", timeout=10_000)
    return page


def log_in(page: Page, env: LocalEnv) -> None:
    page.fill("#password", operator_password(env))
    page.click("#login-form button[type=submit]")
    expect(page.locator("#who")).to_be_visible()


@pytest.fixture
def page(browser: Browser, dashboard: Dashboard, clean_env: LocalEnv) -> Iterator[Page]:
    """A logged-in page at 1280x720."""
    opened = open_page(browser, dashboard)
    log_in(opened, clean_env)
    yield opened
    opened.context.close()


def flag_row(page: Page, name: str) -> Any:
    return page.locator(f'#flags tr[data-flag="{name}"]')


def test_flip_hiddenfeature_from_the_page(page: Page, local_env: LocalEnv) -> None:
    url = local_env.proxy_url + "/hiddenfeature"
    assert requests.get(url, timeout=5).status_code == 404
    page.fill("#flag-name", "hiddenfeature")
    page.fill("#flag-value", "on")
    page.click("#flag-form button[type=submit]")
    expect(page.locator("#message")).to_have_text("flag:hiddenfeature = on")
    expect(flag_row(page, "hiddenfeature").locator(".value")).to_have_text("on")
    wait_until(lambda: requests.get(url, timeout=5).status_code == 200, 10,
               "/hiddenfeature answering 200 through the proxy")
    flag_row(page, "hiddenfeature").get_by_role("button", name="Turn off").click()
    expect(flag_row(page, "hiddenfeature").locator(".value")).to_have_text("off")
    wait_until(lambda: requests.get(url, timeout=5).status_code == 404, 10,
               "/hiddenfeature answering 404 again")
    flag_row(page, "hiddenfeature").get_by_role("button", name="Delete").click()
    expect(flag_row(page, "hiddenfeature")).to_have_count(0)
    assert local_env.redis().get("flag:hiddenfeature") is None


def test_kill_switch_under_steady_load(page: Page, local_env: LocalEnv) -> None:
    with Load(local_env.proxy_url + "/", threads=4, max_seconds=90) as load:
        wait_until(lambda: len(load.since(0)) >= 100, 30, "100 answers through the proxy")
        assert share(load.since(0), "canary") > 0.2
        page.click("#kill-switch")
        expect(page.locator("#kill-state")).to_have_text("ARMED: the canary gets no traffic")
        expect(page.locator("#kill-switch")).to_have_attribute("aria-pressed", "true")
        wait_held_out(local_env, "canary-1")
        out = time.monotonic()
        wait_until(lambda: len(load.since(out)) >= 150, 30,
                   "150 requests started after HAProxy held the canary out")
        # The traffic panel says so too: the canary's real share falls to 0.
        expect(page.locator('#traffic tr[data-id="canary-1"] td').nth(4)).to_have_text(
            "0.0", timeout=5_000)
    assert [s for s in load.since(out) if s.role == "canary"] == []
    assert load.failures() == []
    assert local_env.redis().get("canary:alert") == "on"


def test_bad_flag_value_is_refused_with_the_clis_words(page: Page,
                                                       local_env: LocalEnv) -> None:
    cli = local_env.cdpipe("flag", "set", "hiddenfeature", "150%", check=False)
    assert cli.returncode == 1
    words = cli.stderr.strip().removeprefix("error: ")
    page.fill("#flag-name", "hiddenfeature")
    page.fill("#flag-value", "150%")
    page.click("#flag-form button[type=submit]")
    expect(page.locator("#message")).to_have_text(words)
    expect(page.locator("#message")).to_have_class("error")
    assert local_env.redis().get("flag:hiddenfeature") is None


def test_canary_weight_from_the_slider_by_keyboard(page: Page, local_env: LocalEnv) -> None:
    slider = page.locator("#canary-weight")
    slider.focus()
    page.keyboard.press("Home")  # 0
    for _ in range(10):
        page.keyboard.press("ArrowRight")
    expect(page.locator("#canary-weight-out")).to_have_text("10%")
    page.keyboard.press("Tab")  # to "Set weight"
    page.keyboard.press("Enter")
    expect(page.locator("#message")).to_have_text("canary:weight = 10")
    assert local_env.redis().get("canary:weight") == "10"
    expect(page.locator("#canary-weight-value")).to_have_text("10")


def test_second_tab_sees_a_change_without_reloading(
        browser: Browser, dashboard: Dashboard, page: Page, local_env: LocalEnv) -> None:
    viewer = open_page(browser, dashboard)  # not logged in: a read-only view
    marker = viewer.evaluate("document.timeline.currentTime")
    page.fill("#flag-name", "newcheckout")
    page.fill("#flag-value", "25%")
    clicked = time.monotonic()
    page.click("#flag-form button[type=submit]")
    # How soon is a figure of `make bench` (bench/dashboard.py), not a test's deadline.
    expect(flag_row(viewer, "newcheckout").locator(".value")).to_have_text("25%")
    seen = time.monotonic() - clicked
    # The same document all along (a reload would restart its timeline).
    assert viewer.evaluate("document.timeline.currentTime") > marker
    # And a plain redis-cli style SET reaches it the same way.
    local_env.redis(OPERATOR).set("flag:beta", "on")
    expect(flag_row(viewer, "beta").locator(".value")).to_have_text("on")
    print(f"second tab saw the click's change after {seen:.3f} s")
    viewer.context.close()


def test_many_tabs_of_one_browser_all_stay_live(browser: Browser, dashboard: Dashboard,
                                                local_env: LocalEnv) -> None:
    """More tabs than a browser's six HTTP/1.1 connections to one site: each still
    loads and follows the changes (the feed is a WebSocket, not a held HTTP stream)."""
    context = browser.new_context()
    tabs = []
    for _ in range(8):
        tab = context.new_page()
        tab.goto(dashboard.url)
        expect(tab.locator("#connection")).to_have_text("live", timeout=10_000)
        tabs.append(tab)
    local_env.redis(OPERATOR).set("flag:manytabs", "on")
    for tab in tabs:
        expect(flag_row(tab, "manytabs").locator(".value")).to_have_text("on")
    context.close()


def test_read_only_without_login(browser: Browser, dashboard: Dashboard,
                                 local_env: LocalEnv) -> None:
    local_env.redis(OPERATOR).set("flag:hiddenfeature", "on")
    viewer = open_page(browser, dashboard)
    expect(flag_row(viewer, "hiddenfeature").locator(".value")).to_have_text("on")
    expect(viewer.locator("#kill-switch")).to_be_disabled()
    expect(flag_row(viewer, "hiddenfeature").get_by_role("button", name="Turn off")
           ).to_be_disabled()
    # A request made anyway, from the page's own origin, is refused.
    status = viewer.evaluate("""() => fetch('/api/canary/alert', {method: 'POST',
        headers: {'Content-Type': 'application/json'}, body: '{"on": true}'})
        .then(r => r.status)""")
    assert status == 401
    assert local_env.redis().get("canary:alert") in (None, "off")
    viewer.context.close()


def test_rollback_asks_for_confirmation_then_runs_the_cli(
        page: Page, canary_on_old: LocalEnv) -> None:
    env = canary_on_old
    page.reload()
    expect(page.locator("#connection")).to_have_text("live", timeout=10_000)
    expect(page.locator("#canary-commit")).to_have_text(env.old[:12])
    page.click("#rollback")
    expect(page.locator("#confirm-text")).to_contain_text(env.new[:12])
    page.click("#confirm-no")
    expect(page.locator("#confirm")).to_be_hidden()
    assert page.locator("#job").is_hidden()
    page.click("#rollback")
    page.click("#confirm-yes")
    expect(page.locator("#message")).to_have_text("cdpipe canary rollback started")
    expect(page.locator("#job")).to_have_class("ok", timeout=300_000)
    expect(page.locator("#canary-commit")).to_have_text(env.new[:12], timeout=15_000)
    deploys = page.locator("#deploys li").first
    expect(deploys).to_contain_text(env.new[:12])
    expect(deploys).to_contain_text("canary")


def test_readable_on_a_phone_and_at_1280(browser: Browser, dashboard: Dashboard,
                                         local_env: LocalEnv, tmp_path: Path) -> None:
    local_env.redis(OPERATOR).set("flag:hiddenfeature", "on")
    local_env.redis(OPERATOR).set("flag:newcheckout", "25%")
    for width, height in ((390, 844), (1280, 720)):
        viewer = open_page(browser, dashboard, width, height)
        expect(flag_row(viewer, "newcheckout")).to_have_count(1)
        # Nothing wider than the screen: no sideways scrolling of the page itself.
        assert viewer.evaluate("document.documentElement.scrollWidth") <= width
        expect(viewer.locator("#password")).to_be_in_viewport()
        viewer.context.close()


def test_the_page_shows_the_monitors_samples(browser: Browser, dashboard: Dashboard,
                                             local_env: LocalEnv) -> None:
    r: redis.Redis = local_env.redis()
    wait_until(lambda: len(r.hkeys("monitor:samples")) >= 4, 120,
               "the monitor's samples of the four instances")
    viewer = open_page(browser, dashboard)
    for instance in ("proxy-1", "redis-1", "prod-1", "canary-1"):
        row = viewer.locator(f'#instances tr[data-id="{instance}"]')
        expect(row).to_contain_text("healthy")
        no_value = "\u2013"  # what the page shows before a sample
        expect(row.locator(".metric .value").first).not_to_have_text(no_value)
    viewer.context.close()


def test_screenshot_under_load(browser: Browser, dashboard: Dashboard, local_env: LocalEnv,
                               tmp_path: Path) -> None:
    """The README's picture: a logged-in page with flags set and traffic flowing."""
    r = local_env.redis(OPERATOR)
    r.set("flag:hiddenfeature", "on")
    r.set("flag:newcheckout", "25%")
    page = open_page(browser, dashboard)
    log_in(page, local_env)
    with Load(local_env.proxy_url + "/", threads=2, max_seconds=30, pause=0.02):
        expect(page.locator("#canary-share")).not_to_have_text("no traffic", timeout=10_000)
        time.sleep(2)  # a few seconds of rates
        shot = tmp_path / "dashboard.png"
        page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if SCREENSHOT:
        shutil.copyfile(shot, SCREENSHOT)
    page.context.close()


# -- the HTTP rules, without a browser ------------------------------------------------
def test_actions_need_the_login_the_csrf_token_and_this_origin(dashboard: Dashboard,
                                                               local_env: LocalEnv) -> None:
    base = dashboard.url.rstrip("/")
    action = base + "/api/flag"
    body = {"name": "hiddenfeature", "value": "on"}
    assert requests.post(action, json=body, timeout=5).status_code == 401
    with requests.Session() as s:
        wrong = s.post(base + "/api/login", json={"password": "guess"}, timeout=5)
        assert wrong.status_code == 403 and "wrong password" in wrong.json()["error"]
        good = s.post(base + "/api/login", json={"password": operator_password(local_env)},
                      timeout=5)
        assert good.status_code == 200
        cookie = good.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        csrf = good.json()["csrf"]
        assert s.post(action, json=body, timeout=5).status_code == 401  # no token
        assert s.post(action, json=body, headers={"X-CSRF-Token": "x" * 43},
                      timeout=5).status_code == 401
        elsewhere = s.post(action, json=body, timeout=5, headers={
            "X-CSRF-Token": csrf, "Origin": "http://attacker.example"})
        assert elsewhere.status_code == 403
        assert local_env.redis().get("flag:hiddenfeature") is None
        done = s.post(action, json=body, headers={"X-CSRF-Token": csrf}, timeout=5)
        assert done.status_code == 200 and done.json() == {"message": "flag:hiddenfeature = on"}
        assert local_env.redis().get("flag:hiddenfeature") == "on"
        s.post(base + "/api/logout", timeout=5)
        assert s.post(action, json=body, headers={"X-CSRF-Token": csrf},
                      timeout=5).status_code == 401


def _stream(url: str, seconds: float) -> str:
    """What the stream sends in about ``seconds`` (more when an event comes late); a
    stream quiet for the read timeout after its first events ends the reading (the
    heartbeat comes every 15 s), one that sends nothing at all fails the test."""
    chunks: list[bytes] = []
    deadline = time.monotonic() + seconds
    with requests.get(url, stream=True, timeout=5) as resp:
        try:
            for chunk in resp.iter_content(chunk_size=None):
                chunks.append(chunk)
                if time.monotonic() > deadline:
                    break
        except requests.ConnectionError:  # the read timed out: quiet since
            if not chunks:
                raise
    return b"".join(chunks).decode()


def test_no_secret_reaches_the_browser(dashboard: Dashboard, local_env: LocalEnv) -> None:
    secrets = {p.name: p.read_text().strip() for p in (local_env.home / "secrets").iterdir()
               if p.is_file() and p.read_text().strip()}
    assert len(secrets) >= 5
    base = dashboard.url.rstrip("/")
    with requests.Session() as s:
        login = s.post(base + "/api/login", json={"password": secrets[password_name(OPERATOR)]},
                       timeout=5)
        seen = [login.text, s.get(base + "/api/session", timeout=5).text]
        seen += [s.get(base + path, timeout=5).text
                 for path in ("/", "/dashboard.js", "/dashboard.css", "/api/state")]
    seen.append(_stream(base + "/events", 3))
    state = json.loads(seen[5])
    assert {"instances", "flags", "canary", "alerts", "scale", "deploys"} <= set(state)
    for name, value in secrets.items():
        assert all(value not in text for text in seen), f"{name} was sent to the browser"


def test_a_dashboard_without_rights_reads_and_acts_only_through_its_actor(
        local_env: LocalEnv, clean_env: LocalEnv, tmp_path: Path) -> None:
    """As on the proxy machine: the page's own home holds the operator's and the stats
    page's passwords and nothing else (no state, no key); the state comes from its actor
    (`ACTOR state`) and promote runs as `ACTOR canary promote`, both logged by a wrapper
    that runs cdpipe.dashboard.actor with the environment's real home. With the kill
    switch armed the promote is the CLI's refusal, come back through the actor."""
    home = tmp_path / "home"
    (home / "secrets").mkdir(parents=True)
    for name in (password_name(OPERATOR), "stats_password"):
        shutil.copy(local_env.home / "secrets" / name, home / "secrets" / name)
    calls = tmp_path / "calls.log"
    wrapper = tmp_path / "act"
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> {calls}\n'
                       f'CDPIPE_HOME={local_env.home} exec {sys.executable} '
                       '-m cdpipe.dashboard.actor "$@"\n')
    wrapper.chmod(0o755)
    env = local_env.env | {"CDPIPE_HOME": str(home), "CDPIPE_DASHBOARD_ACTOR": str(wrapper)}
    local_env.redis(OPERATOR).set("canary:alert", "on")
    with dashboard_process(env, free_port(), tmp_path / "dashboard.log") as running:
        base = running.url.rstrip("/")
        state = requests.get(base + "/api/state", timeout=10).json()
        assert sorted(i["role"] for i in state["instances"]) == [
            "canary", "prod", "proxy", "redis"]
        assert state["canary"]["alert"] is True
        with requests.Session() as s:
            login = s.post(base + "/api/login", timeout=5,
                           json={"password": operator_password(local_env)})
            started = s.post(base + "/api/canary/job", json={"job": "promote"}, timeout=5,
                             headers={"X-CSRF-Token": login.json()["csrf"]})
            assert started.json() == {"message": "cdpipe canary promote started"}

            seen: dict[str, Any] = {}

            def finished() -> bool:
                seen.update(s.get(base + "/api/state", timeout=10).json()["job"] or {})
                return seen.get("state") not in (None, "running")
            wait_until(finished, 120, "the promote job to finish", interval=0.5)
            job = seen
    assert job["state"] == "failed" and job["exit"] == 1
    assert any("the canary alert is on" in line for line in job["lines"]), job["lines"]
    assert calls.read_text().splitlines() == ["state", "canary promote"]
    assert not (home / "state.json").exists()
