"""Flags and canary routing driven from Redis: cost of a flag check, propagation from
`SET` to behaviour seen through the proxy, and the canary's share at a few weights."""

from __future__ import annotations

import statistics
import time

import redis
import requests

from app.flags import FlagCache
from bench.scratch_env import BenchEnv
from cdpipe.redis_users import OPERATOR
from cdpipe_host.keys import CANARY_ALERT, CANARY_WEIGHT, flag_key
from devkit.redis_server import scratch_redis


def _percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def flag_check_cost(checks: int = 20_000) -> tuple[float, float]:
    """Median microseconds of one check: the app's cache vs a Redis GET per check."""
    with scratch_redis() as url:
        client = redis.Redis.from_url(url, decode_responses=True)
        client.set(flag_key("bench"), "50%")
        cache = FlagCache(url)
        cache.enabled("bench", "warm-up")
        cached, direct = [], []
        for n in range(checks):
            uid = f"user-{n}"
            t = time.perf_counter_ns()
            cache.enabled("bench", uid)
            cached.append(time.perf_counter_ns() - t)
            t = time.perf_counter_ns()
            client.get(flag_key("bench"))
            direct.append(time.perf_counter_ns() - t)
        cache.close()
    return statistics.median(cached) / 1000, statistics.median(direct) / 1000


def _redis(env: BenchEnv, user: str = OPERATOR) -> redis.Redis:
    """A client as the operator (flags, the canary's switch and weight), or ``user``."""
    return redis.Redis.from_url(env.redis_url(user), decode_responses=True)


def flag_propagation(env: BenchEnv, rounds: int = 60) -> list[float]:
    """Milliseconds from SET flag:hiddenfeature to the new answer through the proxy."""
    r = _redis(env)
    url = f"http://127.0.0.1:{env.port_base}/hiddenfeature"
    latencies = []
    with requests.Session() as session:
        for n in range(rounds):
            value, want = ("on", 200) if n % 2 == 0 else ("off", 404)
            t0 = time.perf_counter()
            r.set(flag_key("hiddenfeature"), value)
            while session.get(url, timeout=5).status_code != want:
                if time.perf_counter() - t0 > 5:
                    raise SystemExit("bench: flag never propagated")
            latencies.append((time.perf_counter() - t0) * 1000)
            time.sleep(0.05)
    r.delete(flag_key("hiddenfeature"))
    return latencies


def alert_propagation(env: BenchEnv, rounds: int = 30, run: int = 12) -> list[float]:
    """Milliseconds from SET canary:alert on until the proxy stops sending new requests to
    the canary: the start of the first run of `run` requests that all avoid it (with
    weights 67:33 interleaved, such a run never happens while the canary is in)."""
    r = _redis(env)
    url = f"http://127.0.0.1:{env.port_base}/"
    latencies = []
    with requests.Session() as session:
        for _ in range(rounds):
            r.set(CANARY_ALERT, "off")
            time.sleep(0.3)
            t0 = time.perf_counter()
            r.set(CANARY_ALERT, "on")
            streak_start, streak = None, 0
            while streak < run:
                session.cookies.clear()
                started = time.perf_counter()
                role = session.get(url, timeout=5).json()["role"]
                if role == "canary":
                    streak_start, streak = None, 0
                else:
                    streak_start = streak_start or started
                    streak += 1
                if started - t0 > 5:
                    raise SystemExit("bench: canary alert never took effect")
            assert streak_start is not None
            latencies.append(max(0.0, streak_start - t0) * 1000)
    r.set(CANARY_ALERT, "off")
    return latencies


def canary_share(env: BenchEnv, weights: tuple[int, ...] = (5, 33, 50),
                 requests_per_weight: int = 3000) -> list[tuple[int, float]]:
    r = _redis(env)
    url = f"http://127.0.0.1:{env.port_base}/"
    out = []
    with requests.Session() as session:
        for weight in weights:
            r.set(CANARY_WEIGHT, str(weight))
            time.sleep(0.3)
            canary = 0
            for _ in range(requests_per_weight):
                session.cookies.clear()
                canary += session.get(url, timeout=5).json()["role"] == "canary"
            out.append((weight, 100 * canary / requests_per_weight))
    r.delete(CANARY_WEIGHT)
    return out


def report(env: BenchEnv) -> None:
    cached, direct = flag_check_cost()
    print("\n## Flag check in the app (median of 20,000, microseconds)")
    print("| method | us | vs Redis GET |")
    print("|---|---|---|")
    print(f"| in-process cache (cdpipe) | {cached:.2f} | {cached / direct:.3f} |")
    print(f"| Redis GET per check | {direct:.2f} | 1.000 |")
    print("\n## Propagation from `redis-cli SET` to behaviour seen through the proxy (ms)")
    print("| key | samples | p50 | p99 | max |")
    print("|---|---|---|---|---|")
    for name, values in (("flag:hiddenfeature", flag_propagation(env)),
                         ("canary:alert on", alert_propagation(env))):
        print(f"| {name} | {len(values)} | {statistics.median(values):.1f} "
              f"| {_percentile(values, 99):.1f} | {max(values):.1f} |")
    print("\n## Canary share over 3,000 requests (new users, HAProxy weights from Redis)")
    print("| canary:weight | measured % | error (points) |")
    print("|---|---|---|")
    for weight, measured in canary_share(env):
        print(f"| {weight} | {measured:.2f} | {measured - weight:+.2f} |")


