"""Requests per second and p99 of `/`: direct, through a minimal HAProxy, through cdpipe's.

wrk (Debian's package) drives each target for a few seconds; rounds alternate the
order of the targets so drift on a shared machine hits all of them alike. Direct means
one wrk per backend at the same time (connections split by weight), summed.
"""

from __future__ import annotations

import re
import shutil
import socket
import statistics
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.scratch_env import BenchEnv

MINIMAL_CFG = """\
global
    maxconn 4096
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
frontend www
    bind 127.0.0.1:{port}
    default_backend app
backend app
    balance roundrobin
    server prod 127.0.0.1:{prod} weight 67
    server canary 127.0.0.1:{canary} weight 33
"""


@dataclass
class WrkResult:
    rps: float
    p99_ms: float


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(url: str, seconds: int, connections: int) -> WrkResult:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url],
        capture_output=True, text=True, check=True, timeout=seconds + 30,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    m = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    assert m, out
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise SystemExit(f"bench: {errors.group(1)} failed responses from {url}")
    return WrkResult(rps, _ms(m.group(1), m.group(2)))


def wrk_direct(urls: list[tuple[str, int]], seconds: int) -> WrkResult:
    procs = [
        subprocess.Popen(["wrk", "-t1", f"-c{c}", f"-d{seconds}s", "--latency", u],
                         stdout=subprocess.PIPE, text=True)
        for u, c in urls
    ]
    results = []
    for proc in procs:
        out, _ = proc.communicate(timeout=seconds + 30)
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
        m = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        assert m, out
        results.append(WrkResult(rps, _ms(m.group(1), m.group(2))))
    return WrkResult(sum(r.rps for r in results), max(r.p99_ms for r in results))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(env: BenchEnv, rounds: int = 5, seconds: int = 5,
        connections: int = 12) -> list[tuple[str, float, float, float, float]]:
    if shutil.which("wrk") is None:
        raise SystemExit("bench: wrk not found; run scripts/bootstrap")
    prod, canary = env.port_base + 20, env.port_base + 30
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        cfg = Path(tmp) / "minimal.cfg"
        cfg.write_text(MINIMAL_CFG.format(port=port, prod=prod, canary=canary))
        minimal = subprocess.Popen(["haproxy", "-db", "-f", str(cfg)])
        try:
            targets = {
                "direct": lambda: wrk_direct(
                    [(f"http://127.0.0.1:{prod}/", connections * 2 // 3),
                     (f"http://127.0.0.1:{canary}/", connections // 3)], seconds),
                "minimal haproxy": lambda: wrk(f"http://127.0.0.1:{port}/", seconds,
                                               connections),
                "cdpipe proxy": lambda: wrk(f"http://127.0.0.1:{env.port_base}/", seconds,
                                            connections),
            }
            names = list(targets)
            samples: dict[str, list[WrkResult]] = {n: [] for n in names}
            wrk(f"http://127.0.0.1:{env.port_base}/", 2, connections)  # warm-up
            for r in range(rounds):
                order = names[r % len(names):] + names[:r % len(names)]
                for name in order:
                    samples[name].append(targets[name]())
        finally:
            minimal.terminate()
            minimal.wait(10)
    rows = []
    for name in names:
        rps = [s.rps for s in samples[name]]
        p99 = statistics.median(s.p99_ms for s in samples[name])
        rows.append((name, statistics.median(rps), p99, min(rps), max(rps)))
    return rows
