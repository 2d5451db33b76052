"""Concurrent polling of ``/metrics`` endpoints, and the few series the monitor reads.

One slow or dead endpoint costs at most the timeout and never delays the others.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

WANTED = ("instance_", "app_requests_total", "app_request_duration_seconds_bucket",
          "app_release_info")


@dataclass
class Sample:
    """One endpoint's answer: gauges by name, and labelled counters."""

    target_id: str
    role: str
    ok: bool
    error: str = ""
    timed_out: bool = False  # no answer within the timeout (not refused, not an error)
    seconds: float = 0.0
    gauges: dict[str, float] = field(default_factory=dict)
    series: list[tuple[str, dict[str, str], float]] = field(default_factory=list)


def parse(text: str, sample: Sample) -> None:
    """The wanted series of a Prometheus text exposition (prometheus_client's parser:
    label values may hold any character). Raises ValueError on text it cannot read."""
    for family in text_string_to_metric_families(text):
        for point in family.samples:
            if not point.name.startswith(WANTED):
                continue
            if point.labels:
                sample.series.append((point.name, dict(point.labels), float(point.value)))
            else:
                sample.gauges[point.name] = float(point.value)


async def _one(session: aiohttp.ClientSession, target_id: str, role: str, url: str,
               timeout: float) -> Sample:
    started = time.monotonic()
    sample = Sample(target_id, role, ok=False)
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            if resp.status != 200:
                sample.error = f"HTTP {resp.status}"
            else:
                parse(await resp.text(), sample)
                sample.ok = True
    except ValueError as exc:
        sample.error = f"unreadable metrics: {exc}"
    except TimeoutError as exc:  # aiohttp's timeouts are TimeoutErrors too
        sample.timed_out = True
        sample.error = type(exc).__name__ + (f": {exc}" if str(exc) else "")
    except (aiohttp.ClientError, OSError) as exc:
        sample.error = type(exc).__name__ + (f": {exc}" if str(exc) else "")
    sample.seconds = time.monotonic() - started
    return sample


async def poll(targets: list[tuple[str, str, str]], timeout: float,
               concurrency: int = 256) -> list[Sample]:
    """Polls (id, role, url) targets at once; a sample per target, in order."""
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        return list(await asyncio.gather(
            *(_one(session, tid, role, url, timeout) for tid, role, url in targets)))
