"""CPU percent of a saturated local instance, as the monitor reads it: before (the share
of the whole machine that its process tree used) and after (relative to the instance's
declared size, from its control group, or from its process tree where there is none).

One prod-like instance of the default size (1 vCPU, 1024 MiB): gunicorn with one
worker, saturated by 3 clients asking for 300 ms of CPU each, back to back, on
127.0.0.1, for 10 s. Both figures are read over the same 10 s."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import psutil

from cdpipe.config import Settings
from cdpipe.providers.local.sizing import Sizing
from cdpipe_host.resource_usage import ResourceUsage
from devkit.redis_server import scratch_redis
from devkit.sized_app import gauges, saturate, sized_app

SECONDS = 10


def run() -> list[tuple[str, float, float, float]]:
    """(how the instance is read, machine share %, relative to size %, memory %)."""
    defaults = Settings()
    modes = ["auto", "off"]
    rows = []
    with scratch_redis() as url, tempfile.TemporaryDirectory() as tmp:
        if Sizing(Settings(home=Path(tmp), local_cgroups="auto")).hierarchies is None:
            modes = ["off"]
        for mode in modes:
            with sized_app(Path(tmp) / mode, url, defaults.local_vcpus,
                           defaults.local_memory_mb, mode) as app:
                whole = ResourceUsage("tree", app.sandbox.pid())  # the machine's size
                whole.read()
                gauges(app.url)
                saturate(app.url, SECONDS)
                machine_share = whole.read()[0]
                after = gauges(app.url)
                source = (f"cgroup ({app.cgroup.split('/')[0]}/...)" if app.cgroup
                          else "process tree, no cgroup")
                rows.append((source, machine_share, after["instance_cpu_percent"],
                             after["instance_memory_percent"]))
    return rows


def report() -> None:
    defaults = Settings()
    print(f"\n## A saturated instance ({defaults.local_vcpus:g} vCPU, "
          f"{defaults.local_memory_mb} MiB; one gunicorn worker, 3 clients burning CPU, "
          f"{SECONDS} s; host: {os.cpu_count()} cores, "
          f"{psutil.virtual_memory().total >> 30} GiB)")
    print("| instance read from | CPU %, share of the machine (before) "
          "| CPU %, of its size (now) | memory %, of its size |")
    print("|---|---|---|---|")
    for source, before, now, memory in run():
        print(f"| {source} | {before:.0f} | {now:.0f} | {memory:.1f} |")
    print("(the default prod-cpu rule fires above 40%)")


if __name__ == "__main__":
    report()
