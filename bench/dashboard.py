"""The dashboard: time from a click to the change seen through the proxy (against a
plain Redis SET of the same flag, measured in the same run), a page's update latency
after a `redis-cli SET`, and the dashboard process's memory with ten open pages.

Run alone: ``python -m bench.dashboard`` (its own throw-away environment)."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import redis
import requests
from playwright.sync_api import expect, sync_playwright

from bench.scratch_env import BenchEnv, bench_env
from cdpipe.redis_users import OPERATOR, password_name
from cdpipe_host.keys import flag_key
from devkit import free_port
from devkit.dashboard import dashboard_process, launch, rss_kib

ROUNDS = 20
PAGES = 10


def _percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def _wait_answer(session: requests.Session, url: str, want: int, t0: float) -> float:
    while session.get(url, timeout=5).status_code != want:
        if time.perf_counter() - t0 > 10:
            raise SystemExit(f"bench: {url} never answered {want}")
    return (time.perf_counter() - t0) * 1000


def click_to_proxy(page: Any, env: BenchEnv, r: redis.Redis) -> tuple[list[float], list[float]]:
    """Milliseconds from a click on the flag's toggle to /hiddenfeature answering
    accordingly through the proxy; and from a plain SET of the same flag. Each round
    flips it on and back off, by click then SET in even rounds, by SET then click in odd
    ones (both ways, both directions)."""
    url = f"http://127.0.0.1:{env.port_base}/hiddenfeature"
    clicks, sets = [], []
    row = page.locator('#flags tr[data-flag="hiddenfeature"]')

    def click(label: str, want: int, shown: str) -> None:
        button = row.get_by_role("button", name=label)
        expect(button).to_be_enabled()
        t0 = time.perf_counter()
        button.click()
        clicks.append(_wait_answer(session, url, want, t0))
        expect(row.locator(".value")).to_have_text(shown)

    def redis_set(value: str, want: int) -> None:
        t0 = time.perf_counter()
        r.set(flag_key("hiddenfeature"), value)
        sets.append(_wait_answer(session, url, want, t0))
        expect(row.locator(".value")).to_have_text(value)

    with requests.Session() as session:
        for n in range(ROUNDS):
            if n % 2 == 0:
                click("Turn on", 200, "on")
                redis_set("off", 404)
            else:
                redis_set("on", 200)
                click("Turn off", 404, "off")
    return clicks, sets


def page_update(page: Any, r: redis.Redis) -> list[float]:
    """Milliseconds from SET flag:benchlive to the page showing the value (the page
    stamps the moment with the same clock: both run on this machine)."""
    page.evaluate("""() => {
        window.benchSeen = {};
        new MutationObserver(() => {
            const cell = document.querySelector('#flags tr[data-flag="benchlive"] .value');
            if (cell && !(cell.textContent in window.benchSeen)) {
                window.benchSeen[cell.textContent] = Date.now();
            }
        }).observe(document.getElementById('flags'), {subtree: true, childList: true,
                                                       characterData: true});
    }""")
    latencies = []
    for n in range(ROUNDS):
        value = f"{n + 1}%"
        t0 = time.time()
        r.set(flag_key("benchlive"), value)
        deadline = time.monotonic() + 10
        while (seen := page.evaluate(f"window.benchSeen['{value}']")) is None:
            if time.monotonic() > deadline:
                raise SystemExit("bench: the page never showed the new value")
            time.sleep(0.005)
        latencies.append(seen - t0 * 1000)
    r.delete(flag_key("benchlive"))
    return latencies


def memory(browser: Any, url: str, pid: int) -> tuple[int, int, int]:
    """RSS in KiB of the dashboard process: started, one page, ten pages (after 5 s of
    live updates: flags flipping and the traffic section every second)."""
    idle = rss_kib(pid)
    context = browser.new_context()
    pages = []
    one = idle
    for n in range(PAGES):
        page = context.new_page()
        page.goto(url)
        expect(page.locator("#connection")).to_have_text("live", timeout=10_000)
        pages.append(page)
        if n == 0:
            time.sleep(2)
            one = rss_kib(pid)
    time.sleep(5)
    ten = rss_kib(pid)
    context.close()
    return idle, one, ten


def report(env: BenchEnv) -> None:
    if not (env.home / "state.json").exists():  # run alone: the environment first
        env.cdpipe("up")
    password = (env.home / "secrets" / password_name(OPERATOR)).read_text().strip()
    r = redis.Redis.from_url(env.redis_url(OPERATOR), decode_responses=True)
    r.set(flag_key("hiddenfeature"), "off")
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as playwright, \
            dashboard_process(env.env, free_port(), Path(tmp) / "dashboard.log") as dash:
        browser = launch(playwright)
        idle_kib = rss_kib(dash.pid)
        page = browser.new_context(bypass_csp=True).new_page()
        page.goto(dash.url)
        page.fill("#password", password)
        page.click("#login-form button[type=submit]")
        expect(page.locator("#who")).to_be_visible()
        clicks, sets = click_to_proxy(page, env, r)
        updates = page_update(page, r)
        page.context.close()
        time.sleep(1)
        _, one_kib, ten_kib = memory(browser, dash.url, dash.pid)
        browser.close()
    r.delete(flag_key("hiddenfeature"))
    print(f"\n## Dashboard ({ROUNDS} rounds each, milliseconds)")
    print("| what | p50 | p95 | max | p50 vs redis SET |")
    print("|---|---|---|---|---|")
    base = statistics.median(sets)
    for name, values in (("click on a flag toggle -> seen through the proxy", clicks),
                         ("redis SET of the flag -> seen through the proxy (baseline)", sets),
                         ("redis SET -> shown on an open page", updates)):
        ratio = f"{statistics.median(values) / base:.2f}" if values is not updates else "-"
        print(f"| {name} | {statistics.median(values):.1f} | {_percentile(values, 95):.1f} "
              f"| {max(values):.1f} | {ratio} |")
    print(f"\nDashboard process memory (RSS): {idle_kib / 1024:.1f} MiB started, "
          f"{one_kib / 1024:.1f} MiB with one open page, {ten_kib / 1024:.1f} MiB with "
          f"{PAGES} ({ten_kib / one_kib:.2f}x one page)")


if __name__ == "__main__":
    with bench_env() as bench:
        report(bench)
