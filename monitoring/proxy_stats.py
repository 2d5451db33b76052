"""HAProxy's own count of each app server's answers, for the canary judge: responses and
5xx by server from the stats CSV (counters since HAProxy last reloaded). It counts what
the app cannot: the 502/503/504 HAProxy answers itself (a server that closed the
connection, a worker killed by its timeout) and requests that never reached the app's
counters. The monitor runs beside HAProxy (the proxy machine, or sandbox).
"""

from __future__ import annotations

import logging

import aiohttp

from cdpipe_host.haproxy import ServerStats, parse_stats_csv
from cdpipe_host.names import OnceLog, one_line
from monitoring.config import ProxyStats

log = logging.getLogger("monitor.proxy")
FAILED = OnceLog(log)


def _password(cfg: ProxyStats) -> str:
    if cfg.password_file is None:
        return ""
    with open(cfg.password_file, encoding="utf-8") as fh:
        return fh.read().strip()


async def read(cfg: ProxyStats, timeout: float) -> dict[str, ServerStats] | None:
    """The backend's servers by name; None when the page does not answer or read (said
    once per distinct failure: the judge then counts the app's numbers alone)."""
    try:
        auth = aiohttp.BasicAuth(cfg.user, _password(cfg))
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as s, \
                s.get(cfg.url, auth=auth) as resp:
            if resp.status != 200:
                raise ValueError(f"HTTP {resp.status}")
            return parse_stats_csv(await resp.text(), cfg.backend)
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
        what = one_line(f"{type(exc).__name__}: {exc}", 200)
        FAILED.warning((what,), f"HAProxy's stats at {cfg.url} not read ({what}); the "
                                "canary judge counts the app's numbers alone meanwhile")
        return None
