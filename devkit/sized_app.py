"""The app in a real local sandbox of a declared size: the local provider makes the
sandbox (its supervisord, in a control group where the host allows one) and gunicorn
runs in it, serving this checkout, with ``/burn`` on. Tests and the benchmark of
instance size saturate it and read its ``instance_*`` gauges."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis
import requests

from cdpipe import PROJECT_ROOT
from cdpipe.config import Settings
from cdpipe.model import Instance
from cdpipe.providers.local import LocalProvider
from cdpipe.providers.local.sandbox import Sandbox, bin_path
from cdpipe.state import State
from cdpipe_host.keys import flag_key
from devkit.ports import free_port_block

PROGRAM = """\
[program:app]
command={gunicorn} --bind 127.0.0.1:{port} --worker-class gthread --workers 1 --threads 8
    app:create_app()
directory={dir}
environment=PYTHONPATH="{root}",APP_INSTANCE_ID="{id}",APP_REDIS_URL="{redis}",\
APP_METRICS_SCOPE="tree",APP_INSTANCE_VCPUS="{vcpus}",APP_INSTANCE_MEMORY_MB="{memory}",\
APP_INSTANCE_CGROUP="{cgroup}"
autostart=true
stopasgroup=true
killasgroup=true
redirect_stderr=true
stdout_logfile={dir}/logs/app.log
"""


@dataclass
class SizedApp:
    provider: LocalProvider
    instance: Instance
    sandbox: Sandbox
    url: str
    cgroup: str  # "" without a control group


def gauges(url: str) -> dict[str, float]:
    """The app's ``instance_cpu_percent`` and ``instance_memory_percent``."""
    found = {}
    for line in requests.get(url + "/metrics", timeout=5).text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("instance_cpu_percent", "instance_memory_percent"):
            found[name] = float(value)
    return found


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


@contextmanager
def sized_app(home: Path, redis_url: str, vcpus: float, memory_mb: int,
              cgroups: str = "auto") -> Iterator[SizedApp]:
    """The sandbox with gunicorn serving, ``flag:cpuburn`` on; removed on exit."""
    settings = Settings(home=home, port_base=free_port_block(10, 31000), local_vcpus=vcpus,
                        local_memory_mb=memory_mb, local_cgroups=cgroups)  # type: ignore[arg-type]
    provider = LocalProvider(settings)
    state = State()
    [instance] = provider.ensure(state, {"prod": 1})
    sandbox = provider.sandbox(instance)
    try:
        cgroup = provider.sizing.host_vars(instance.id)["cdpipe_instance_cgroup"]
        (sandbox.dir / "supervisor.d" / "app.conf").write_text(PROGRAM.format(
            gunicorn=bin_path("gunicorn"), port=instance.ports["http"], dir=sandbox.dir,
            root=PROJECT_ROOT, id=instance.id, redis=redis_url, vcpus=vcpus,
            memory=memory_mb, cgroup=cgroup))
        subprocess.run([bin_path("supervisorctl"), "-c", str(sandbox.conf), "update"],
                       check=True, capture_output=True, timeout=30)
        redis.Redis.from_url(redis_url).set(flag_key("cpuburn"), "on")
        url = instance.url()
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(url + "/burn?ms=1", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn in {sandbox.dir} does not serve /burn; "
                                   f"see {sandbox.dir}/logs/app.log")
            time.sleep(0.1)
        yield SizedApp(provider, instance, sandbox, url, cgroup)
    finally:
        provider.terminate(state, instance)
