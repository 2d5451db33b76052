"""A local sandbox is a machine of its declared size: a real gunicorn in a real sandbox
(supervisord started by the local provider), saturated by a bounded load on 127.0.0.1,
reads as saturated on its /metrics; its memory is a share of the declared memory.

Declared: half a vCPU and 256 MiB. One gunicorn worker under the GIL uses at most one
core, so as a share of a host with two or more cores it can never read above 50%; as a
share of its half vCPU it reads near 100% (the cgroup caps it at half a core). Both
ways are tested: with a control group (where the host allows one) and without."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import redis
import requests

from cdpipe import PROJECT_ROOT
from cdpipe.config import Settings
from cdpipe.model import Instance
from cdpipe.providers.local import LocalProvider
from cdpipe.providers.local.sandbox import Sandbox, bin_path
from cdpipe.state import State
from tests.support import free_port_block, wait_until

VCPUS, MEMORY_MB = 0.5, 256
DEFAULT_UPPER_CPU = 40  # roles/monitor/defaults: prod-cpu's upper threshold
PROGRAM = """\
[program:app]
command={gunicorn} --bind 127.0.0.1:{port} --worker-class gthread --workers 1 --threads 8
    app:create_app()
directory={dir}
environment=PYTHONPATH="{root}",APP_INSTANCE_ID="{id}",APP_REDIS_URL="{redis}",APP_METRICS_SCOPE="tree",APP_INSTANCE_VCPUS="{vcpus}",APP_INSTANCE_MEMORY_MB="{memory}",APP_INSTANCE_CGROUP="{cgroup}"
autostart=true
stopasgroup=true
killasgroup=true
redirect_stderr=true
stdout_logfile={dir}/logs/app.log
"""


@dataclass
class Box:
    provider: LocalProvider
    instance: Instance
    sandbox: Sandbox
    url: str
    cgroup: str


def metrics(url: str) -> dict[str, float]:
    found = {}
    for line in requests.get(url + "/metrics", timeout=5).text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("instance_cpu_percent", "instance_memory_percent"):
            found[name] = float(value)
    return found


@pytest.fixture(params=["auto", "off"], ids=["cgroup", "process-tree"])
def box(request: pytest.FixtureRequest, tmp_path: Path,
        redis_server: tuple[int, str]) -> Iterator[Box]:
    settings = Settings(home=tmp_path / "home", port_base=free_port_block(10, 31000),
                        local_vcpus=VCPUS, local_memory_mb=MEMORY_MB,
                        local_cgroups=request.param)
    provider = LocalProvider(settings)
    if request.param == "auto" and provider.sizing.hierarchies is None:
        pytest.skip(provider.sizing.note())
    state = State()
    [instance] = provider.ensure(state, {"prod": 1})
    sandbox = provider.sandbox(instance)
    try:
        port, password = redis_server
        cgroup = provider.sizing.host_vars(instance.id)["cdpipe_instance_cgroup"]
        (sandbox.dir / "supervisor.d" / "app.conf").write_text(PROGRAM.format(
            gunicorn=bin_path("gunicorn"), port=instance.ports["http"], dir=sandbox.dir,
            root=PROJECT_ROOT, id=instance.id, redis=f"redis://:{password}@127.0.0.1:{port}/0",
            vcpus=VCPUS, memory=MEMORY_MB, cgroup=cgroup))
        subprocess.run([bin_path("supervisorctl"), "-c", str(sandbox.conf), "update"],
                       check=True, capture_output=True, timeout=30)
        redis.Redis(port=port, password=password).set("flag:cpuburn", "on")
        url = instance.url()

        def burns() -> bool:
            try:
                return requests.get(url + "/burn?ms=1", timeout=2).status_code == 200
            except requests.RequestException:
                return False
        wait_until(burns, 30, "gunicorn in the sandbox serving /burn")
        yield Box(provider, instance, sandbox, url, cgroup)
    finally:
        provider.terminate(state, instance)


def saturate(url: str, seconds: float, clients: int = 3) -> None:
    """``clients`` threads asking for 300 ms of CPU each, back to back, for ``seconds``."""
    stop = time.monotonic() + seconds

    def run() -> None:
        with requests.Session() as session:
            while time.monotonic() < stop:
                session.get(url + "/burn?ms=300", timeout=10)
    threads = [threading.Thread(target=run) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 15)


def sandbox_rss(sandbox: Sandbox) -> int:
    supervisord = psutil.Process(sandbox.pid())
    return sum(p.memory_info().rss for p in [supervisord, *supervisord.children(True)])


def test_a_saturated_sandbox_reads_as_saturated(box: Box) -> None:
    metrics(box.url)  # the next reading covers the load only
    saturate(box.url, 5)
    cpu = metrics(box.url)["instance_cpu_percent"]
    # A share of the host could not exceed 50% here (one GIL-bound worker, one core).
    assert cpu > 1.5 * DEFAULT_UPPER_CPU, f"saturated at {VCPUS} vCPU but read {cpu:.0f}%"
    time.sleep(2)  # an idle while: the next reading averages over it
    idle = metrics(box.url)["instance_cpu_percent"]
    assert idle < cpu / 2


def test_memory_is_a_share_of_the_declared_memory(box: Box) -> None:
    memory = metrics(box.url)["instance_memory_percent"]
    rss_share = 100 * sandbox_rss(box.sandbox) / (MEMORY_MB * 1024 * 1024)
    # The group counts what the processes map plus kernel memory and the page cache in
    # use; the tree counts resident memory only: the same order of magnitude either way.
    assert rss_share / 2 < memory < rss_share * 3 + 5, (memory, rss_share)
    host_share = 100 * sandbox_rss(box.sandbox) / psutil.virtual_memory().total
    assert memory > 2 * host_share or psutil.virtual_memory().total < 2 * MEMORY_MB << 20


def test_the_sandbox_runs_in_its_group_until_it_is_removed(box: Box) -> None:
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
    assert sys.platform.startswith("linux")
