"""A local sandbox is a machine of its declared size: a real gunicorn in a real sandbox
(supervisord started by the local provider), saturated by a bounded load on 127.0.0.1,
reads as saturated on its /metrics; its memory is a share of the declared memory.

Declared: a quarter of a vCPU and 256 MiB. One gunicorn worker under the GIL uses at
most one core, so as a share of a host with two or more cores it can never read above
50%; as a share of its quarter vCPU it reads near 100% (a control group caps it at a
quarter of a core), even on a host busy enough to give it only part of a core. Both ways
are tested: with a control group (where the host allows one) and without."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from cdpipe.config import Settings
from cdpipe.providers.local.sizing import Sizing
from devkit.sized_app import SizedApp, gauges, saturate, sized_app

VCPUS, MEMORY_MB = 0.25, 256
DEFAULT_UPPER_CPU = 40  # roles/monitor/defaults: prod-cpu's upper threshold


@pytest.fixture(params=["auto", "off"], ids=["cgroup", "process-tree"])
def box(request: pytest.FixtureRequest, tmp_path: Path,
        redis_server: tuple[int, str]) -> Iterator[SizedApp]:
    sizing = Sizing(Settings(home=tmp_path / "home", local_cgroups=request.param))
    if request.param == "auto" and sizing.hierarchies is None:
        pytest.skip(sizing.note())
    port, password = redis_server
    with sized_app(tmp_path / "home", f"redis://default:{password}@127.0.0.1:{port}/0",
                   VCPUS, MEMORY_MB, request.param) as app:
        yield app


def sandbox_rss(box: SizedApp) -> int:
    supervisord = psutil.Process(box.sandbox.pid())
    return sum(p.memory_info().rss for p in [supervisord, *supervisord.children(True)])


def test_a_saturated_sandbox_reads_as_saturated(box: SizedApp) -> None:
    gauges(box.url)  # the next reading covers the load only
    saturate(box.url, 5)
    cpu = gauges(box.url)["instance_cpu_percent"]
    # A share of the host could not exceed 50% here (one GIL-bound worker, one core).
    assert cpu > 1.5 * DEFAULT_UPPER_CPU, f"saturated at {VCPUS} vCPU but read {cpu:.0f}%"
    time.sleep(2)  # an idle while, which the next reading averages over
    idle = gauges(box.url)["instance_cpu_percent"]  # averaged over an idle while
    assert idle < cpu / 2


def test_memory_is_a_share_of_the_declared_memory(box: SizedApp) -> None:
    memory = gauges(box.url)["instance_memory_percent"]
    rss = sandbox_rss(box)
    rss_share = 100 * rss / (MEMORY_MB * 1024 * 1024)
    # The group counts what the processes map plus kernel memory and the page cache in
    # use; the tree counts resident memory only: the same order of magnitude either way.
    assert rss_share / 2 < memory < rss_share * 3 + 5, (memory, rss_share)
    # ... and far above the share of this host's memory (when the host is larger).
    host_share = 100 * rss / psutil.virtual_memory().total
    if psutil.virtual_memory().total > 4 * MEMORY_MB * 1024 * 1024:
        assert memory > 2 * host_share


def test_the_sandbox_runs_in_its_group_until_it_is_removed(box: SizedApp) -> None:
    if not box.cgroup:
        pytest.skip("no control group in this mode")
    group = box.provider.sizing.group(box.instance.id)
    assert group is not None
    supervisord = psutil.Process(box.sandbox.pid())
    assert {p.pid for p in [supervisord, *supervisord.children(True)]} <= group.group.pids()
    quota = group.group.dir("cpu") / ("cpu.max" if group.group.hierarchies.version == 2
                                      else "cpu.cfs_quota_us")
    assert quota.read_text().split()[0] == str(int(VCPUS * 100_000))
    box.sandbox.stop()
    assert not group.group.exists()


def test_a_cdpipe_command_run_inside_a_sandbox_leaves_its_group(box: SizedApp) -> None:
    """As the monitor's `cdpipe scale` does: the control plane is no instance."""
    if not box.cgroup:
        pytest.skip("no control group in this mode")
    group = box.provider.sizing.group(box.instance.id)
    assert group is not None
    code = ("from cdpipe.config import Settings; from cdpipe.providers.local import "
            "LocalProvider; import os; "
            f"LocalProvider(Settings(home={str(box.provider.settings.home)!r})); "
            "print(open('/proc/self/cgroup').read())")
    inside = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, timeout=60, preexec_fn=group.join)
    assert group.group.holds(inside.stdout) is False
    assert f"/{box.cgroup}" not in inside.stdout
