"""CPU and memory use of an instance, as percentages of the machine, through psutil.

Two scopes: ``host`` (a real machine: the whole host, which is the instance) and
``tree`` (a local sandbox, where every instance shares one host: the instance's own
process tree, from a root process down). Both are percentages of the whole machine,
all cores together, so thresholds mean the same on both: on 2 cores one busy core is
50%. CPU is averaged over the time since the previous reading. ``InstanceUsageCollector``
exposes both as Prometheus gauges, for the app and the agent alike.
"""

from __future__ import annotations

import os
import threading
import time

import psutil
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector


class ResourceUsage:
    def __init__(self, scope: str = "tree", root_pid: int | None = None) -> None:
        if scope not in ("host", "tree"):
            raise ValueError(f"scope must be host or tree, not {scope!r}")
        self.scope = scope
        self.root_pid = root_pid or os.getpid()
        self._lock = threading.Lock()
        self._cpus = psutil.cpu_count() or 1
        self._last: tuple[float, float] | None = None  # (wall time, cpu seconds)
        self._procs: dict[int, psutil.Process] = {}
        if scope == "host":
            psutil.cpu_percent(None)

    def _tree(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.root_pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return []
        # Keep Process objects across readings: their cpu_times are cumulative.
        self._procs = {p.pid: self._procs.get(p.pid, p) for p in procs}
        return list(self._procs.values())

    def _tree_cpu_seconds(self, procs: list[psutil.Process]) -> float:
        total = 0.0
        for proc in procs:
            try:
                times = proc.cpu_times()
                total += times.user + times.system
            except psutil.Error:
                continue
        return total

    def read(self) -> tuple[float, float]:
        """(cpu percent, memory percent) of the machine."""
        with self._lock:
            if self.scope == "host":
                return psutil.cpu_percent(None), psutil.virtual_memory().percent
            procs = self._tree()
            now, cpu = time.monotonic(), self._tree_cpu_seconds(procs)
            if self._last is None:
                try:
                    started = psutil.Process(self.root_pid).create_time()
                    elapsed = max(1e-3, time.time() - started)
                except psutil.Error:
                    elapsed = 1.0
                percent = 100 * cpu / (elapsed * self._cpus)
            else:
                elapsed = max(1e-3, now - self._last[0])
                percent = 100 * max(0.0, cpu - self._last[1]) / (elapsed * self._cpus)
            self._last = (now, cpu)
            rss = 0
            for proc in procs:
                try:
                    rss += proc.memory_info().rss
                except psutil.Error:
                    continue
            memory = 100 * rss / psutil.virtual_memory().total
            return min(100.0, percent), memory


def default_root() -> int:
    """The root of the serving process tree: a gunicorn master when there is one."""
    try:
        parent = psutil.Process(os.getppid())
        if "gunicorn" in " ".join(parent.cmdline()):
            return parent.pid
    except psutil.Error:
        pass
    return os.getpid()


class InstanceUsageCollector(Collector):
    """``instance_cpu_percent`` and ``instance_memory_percent`` for a registry: what the
    monitor polls, from the app and from the agent alike."""

    def __init__(self, usage: ResourceUsage) -> None:
        self.usage = usage

    def collect(self):  # type: ignore[no-untyped-def]
        cpu, memory = self.usage.read()
        yield GaugeMetricFamily("instance_cpu_percent",
                                f"CPU used by the instance ({self.usage.scope}), % of the machine",
                                value=cpu)
        yield GaugeMetricFamily("instance_memory_percent",
                                f"Memory used by the instance ({self.usage.scope}), "
                                "% of the machine", value=memory)
