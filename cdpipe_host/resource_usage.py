"""CPU and memory use of an instance, as percentages of the instance, through psutil or
its control group.

Two scopes: ``host`` (a real machine: the whole host, which is the instance; psutil's
figures) and ``tree`` (a local sandbox, where every instance shares one host). A local
instance is a machine of a declared ``Size`` (vCPUs and memory): its figures are
relative to that size, as ``docker stats`` reports a container's memory against its
limit, so a saturated one-vCPU instance reads near 100% whatever the host's cores.
Usage comes from the sandbox's control group when it runs in one (``cgroup``: its name,
see ``cdpipe_host.cgroup``), else from its own process tree (from a root process down).
CPU is averaged over the time since the previous reading. ``InstanceUsageCollector``
exposes both as Prometheus gauges, for the app and the agent alike.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import psutil
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from cdpipe_host.cgroup import Group, own_group

log = logging.getLogger(__name__)
MIB = 1024 * 1024


@dataclass(frozen=True)
class Size:
    """The declared size of an instance: CPUs (fractions allowed) and memory in bytes."""

    vcpus: float
    memory_bytes: int

    def __post_init__(self) -> None:
        if self.vcpus <= 0 or self.memory_bytes <= 0:
            raise ValueError(f"an instance's size must be positive, not {self}")

    @classmethod
    def of_machine(cls) -> Size:
        return cls(float(psutil.cpu_count() or 1), psutil.virtual_memory().total)


def cpu_percent(cpu_seconds: float, elapsed: float, vcpus: float) -> float:
    """CPU time used over ``elapsed`` seconds as a percentage of ``vcpus`` CPUs, 0-100."""
    if elapsed <= 0:
        return 0.0
    return min(100.0, max(0.0, 100 * cpu_seconds / (elapsed * vcpus)))


def memory_percent(used_bytes: int, size_bytes: int) -> float:
    return min(100.0, max(0.0, 100 * used_bytes / size_bytes))


class ResourceUsage:
    def __init__(self, scope: str = "tree", root_pid: int | None = None,
                 size: Size | None = None, cgroup: str = "",
                 clock: Callable[[], float] = time.monotonic) -> None:
        if scope not in ("host", "tree"):
            raise ValueError(f"scope must be host or tree, not {scope!r}")
        self.scope = scope
        self.root_pid = root_pid or os.getpid()
        self.size = size or Size.of_machine()
        self.clock = clock
        self._lock = threading.Lock()
        self._last: tuple[float, float] | None = None  # (wall time, cpu seconds)
        self._procs: dict[int, psutil.Process] = {}
        self.group: Group | None = None
        if scope == "host":
            psutil.cpu_percent(None)
        elif cgroup:
            self.group = own_group(cgroup)
            if self.group is None:
                log.warning("not in control group %s: reading the process tree of pid %d "
                            "instead", cgroup, self.root_pid)
            else:
                self._last = (clock(), self.group.usage()[0])

    @property
    def source(self) -> str:
        """Where the figures come from: host, cgroup or tree."""
        return "cgroup" if self.group is not None else self.scope

    def _tree(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.root_pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return []
        # Keep Process objects across readings: their cpu_times are cumulative.
        self._procs = {p.pid: self._procs.get(p.pid, p) for p in procs}
        return list(self._procs.values())

    def _tree_usage(self) -> tuple[float, int]:
        """(CPU seconds, resident bytes) of the process tree."""
        cpu, rss = 0.0, 0
        for proc in self._tree():
            try:
                times = proc.cpu_times()
                cpu += times.user + times.system
                rss += proc.memory_info().rss
            except psutil.Error:
                continue
        return cpu, rss

    def _since_start(self) -> float:
        try:
            return max(1e-3, time.time() - psutil.Process(self.root_pid).create_time())
        except psutil.Error:
            return 1.0

    def read(self) -> tuple[float, float]:
        """(cpu percent, memory percent) of the instance."""
        with self._lock:
            if self.scope == "host":
                return psutil.cpu_percent(None), psutil.virtual_memory().percent
            now = self.clock()
            if self.group is not None:
                cpu, used = self.group.usage()
            else:
                cpu, used = self._tree_usage()
            if self._last is None:
                elapsed, spent = self._since_start(), cpu
            else:
                elapsed, spent = now - self._last[0], cpu - self._last[1]
            self._last = (now, cpu)
            return (cpu_percent(spent, elapsed, self.size.vcpus),
                    memory_percent(used, self.size.memory_bytes))


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
        size = self.usage.size
        of = (f"{size.vcpus:g} vCPU, {size.memory_bytes // MIB} MiB"
              if self.usage.scope == "tree" else "the machine")
        yield GaugeMetricFamily("instance_cpu_percent",
                                f"CPU used by the instance ({self.usage.source}), % of {of}",
                                value=cpu)
        yield GaugeMetricFamily("instance_memory_percent",
                                f"Memory used by the instance ({self.usage.source}), "
                                f"% of {of}", value=memory)
