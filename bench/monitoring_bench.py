"""The monitor's poll cycle against many metric endpoints, its memory, and the time from
a sustained CPU breach to a new prod instance serving through the proxy."""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import requests
import yaml
from aiohttp import web

from bench.scratch_env import BenchEnv
from cdpipe.redis_users import MONITOR, OPERATOR
from cdpipe_host.keys import MONITOR_ALERTS, MONITOR_OUTBOX, flag_key
from devkit import free_port
from monitoring.config import MonitorConfig
from monitoring.monitor import Monitor

# An app-like /metrics answer (about 50 lines, as the app's).
PAYLOAD = "\n".join(
    ["instance_cpu_percent 12.5", "instance_memory_percent 3.1"]
    + [f'app_requests_total{{route="/r{n}",status="200"}} {n * 10}' for n in range(12)]
    + [f'app_request_duration_seconds_bucket{{le="{b}",route="/"}} {n}'
       for n, b in enumerate(("0.001", "0.005", "0.01", "0.05", "0.1", "0.5", "1", "+Inf"))]
    + [f"process_misc_{n} {n}" for n in range(28)]) + "\n"


def serve_endpoints(ports: list[int], stop: threading.Event) -> threading.Thread:
    async def handler(request: web.Request) -> web.Response:
        if request.path.startswith("/slow"):
            await asyncio.sleep(3)  # a slow endpoint: answers after a monitor's timeout
        return web.Response(text=PAYLOAD)

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/{tail:.*}", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        for port in ports:
            await web.TCPSite(runner, "127.0.0.1", port, backlog=2048).start()
        while not stop.is_set():
            await asyncio.sleep(0.1)
        await runner.cleanup()

    thread = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
    thread.start()
    time.sleep(0.5)
    return thread


def poll_cycles(redis_url: str, counts: tuple[int, ...] = (50, 200, 1000)
                ) -> list[tuple[int, float, float]]:
    ports = [free_port() for _ in range(4)]
    stop = threading.Event()
    server = serve_endpoints(ports, stop)
    rows = []
    try:
        for count in counts:
            targets = [{"id": f"t{n}", "role": "prod",
                        "url": f"http://127.0.0.1:{ports[n % 4]}/metrics/{n}"}
                       for n in range(count)]
            cfg = MonitorConfig.model_validate({
                "interval_seconds": 1, "redis_url": redis_url, "targets": targets,
                "discover_roles": [], "canary": {"enabled": False},
                "rules": [{"name": "cpu", "metric": "cpu_percent", "role": "prod",
                           "upper": 90, "for": 2}]})
            monitor = Monitor(cfg)
            times = []
            for _ in range(3):
                started = time.perf_counter()
                samples = asyncio.run(monitor.cycle())
                times.append(time.perf_counter() - started)
                assert all(s.ok for s in samples), [s.error for s in samples if not s.ok][:3]
            monitor.r.delete(MONITOR_ALERTS, MONITOR_OUTBOX)
            rows.append((count, statistics.median(times), rss_of_monitor(cfg)))
    finally:
        stop.set()
        server.join(5)
    return rows


def rss_of_monitor(cfg: MonitorConfig) -> float:
    """Peak resident memory (MB) of a monitor process doing one cycle of `cfg`."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "monitor.yml"
        path.write_text(yaml.safe_dump(cfg.model_dump(by_alias=True)))
        proc = subprocess.Popen(
            [sys.executable, "-m", "monitoring.monitor", str(path), "--once"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={"MONITOR_REDIS_URL": cfg.redis_url, "PATH": "/usr/bin:/bin"})
        peak = 0
        watched = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                peak = max(peak, watched.memory_info().rss)
            except psutil.Error:
                break
            time.sleep(0.01)
        if proc.wait() != 0:
            raise SystemExit("bench: the monitor failed its cycle")
    return peak / 2**20


RULES = """\
rules:
  - {name: prod-cpu, metric: cpu_percent, role: prod, upper: 30, lower: 5, for: 2, scale: true}
"""


def breach_to_serving(env: BenchEnv) -> tuple[float, float]:
    """(seconds from the start of a sustained CPU load on prod to a new prod instance
    answering through the proxy, the same minus the polls the rule waits for)."""
    rules = env.root / "bench-rules.yml"
    rules.write_text(RULES)
    interval, polls = 1.0, 2
    env.cdpipe("up", "--ref", env.head(), "--monitor-interval", str(interval),
               "--scale-cooldown", "600", "--monitor-rules", str(rules))
    import redis

    r = redis.Redis.from_url(env.redis_url(OPERATOR), decode_responses=True)
    r.set(flag_key("cpuburn"), "on")
    stop = threading.Event()

    def burn() -> None:
        with requests.Session() as s:
            while not stop.is_set():
                s.get(f"http://127.0.0.1:{env.port_base + 20}/burn?ms=300", timeout=10)

    workers = [threading.Thread(target=burn, daemon=True) for _ in range(3)]
    t0 = time.perf_counter()
    for w in workers:
        w.start()
    try:
        with requests.Session() as s:
            while time.perf_counter() - t0 < 180:
                s.cookies.clear()
                body = s.get(f"http://127.0.0.1:{env.port_base}/", timeout=5).json()
                if body["role"] == "prod" and body["instance"] != "prod-1":
                    break
                time.sleep(0.05)
            else:
                raise SystemExit("bench: no scale-out within 180 s")
        took = time.perf_counter() - t0
    finally:
        stop.set()
        r.set(flag_key("cpuburn"), "off")
    return took, took - interval * polls


def report(env: BenchEnv) -> None:
    rows = poll_cycles(env.redis_url(MONITOR))
    print("\n## Monitor poll cycle (median of 3; app-like /metrics of about 50 lines)")
    print("| endpoints | cycle s | ms per endpoint | monitor peak RSS MB |")
    print("|---|---|---|---|")
    for count, seconds, rss in rows:
        print(f"| {count} | {seconds:.3f} | {1000 * seconds / count:.2f} | {rss:.1f} |")
    took, net = breach_to_serving(env)
    print("\n## From a sustained CPU breach on prod to a new instance serving (1 s polls)")
    print(f"| total | {took:.1f} s |\n| minus the 2 polls the rule waits for | {net:.1f} s |")
