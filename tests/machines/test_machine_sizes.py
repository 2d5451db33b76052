"""Each machine of the rig reads its own CPU and memory, as an EC2 instance does: a busy
loop on the prod machine reads near 100% there (the gauge the monitor polls) and near 0%
on every other machine, whatever the control machine itself is busy with (the local
suites run beside this one); each machine has one CPU and 1 GiB of its own."""

from __future__ import annotations

import time

import requests

from monitoring import scrape
from tests.machines.conftest import MachinesEnv
from tests.support import wait_until

# Where the monitor reads each role's gauges: the app's /metrics on prod and canary,
# the metrics agent's on the others.
METRICS_PORT = {"prod": 8000, "canary": 8000, "proxy": 9100, "redis": 9100}
BUSY = "nohup timeout 120 sh -c 'while :; do :; done' >/dev/null 2>&1 &"
WINDOW = 2.0  # seconds of CPU use each reading covers


def gauge(address: str, role: str, name: str) -> float:
    """A gauge of the machine's /metrics, read as the monitor reads it."""
    text = requests.get(f"http://{address}:{METRICS_PORT[role]}/metrics", timeout=10).text
    sample = scrape.Sample(address, role, ok=True)
    scrape.parse(text, sample)
    assert name in sample.gauges, f"{name} missing from {role}'s /metrics"
    return sample.gauges[name]


def cpu_over(addresses: dict[str, str]) -> dict[str, float]:
    """Each role's CPU percentage over the next WINDOW seconds (the gauge is the use
    since its previous reading: read once to start the window, once to end it)."""
    for role, address in addresses.items():
        gauge(address, role, "instance_cpu_percent")
    time.sleep(WINDOW)  # the window measured, not a wait for a condition
    return {role: gauge(address, role, "instance_cpu_percent")
            for role, address in addresses.items()}


def test_a_busy_machine_reads_busy_and_the_others_idle(deployed: MachinesEnv) -> None:
    addresses = {role: deployed.address(role) for role in METRICS_PORT}
    for role, address in addresses.items():
        sizes = deployed.ssh(address, "grep -c ^processor /proc/cpuinfo; "
                                      "grep ^MemTotal: /proc/meminfo").split()
        assert sizes[0] == "1" and int(sizes[2]) == 1024 * 1024, (role, sizes)
        assert gauge(address, role, "instance_memory_percent") < 60, role
    last: dict[str, float] = {}

    def prod_busy_others_idle() -> bool:
        last.update(cpu_over(addresses))
        return last["prod"] >= 80 and all(v <= 15 for r, v in last.items() if r != "prod")

    deployed.ssh(addresses["prod"], BUSY)
    try:
        wait_until(prod_busy_others_idle, 90,
                   lambda: f"prod near 100% and the others near 0% (last reading: {last})",
                   interval=0)
    finally:
        deployed.ssh(addresses["prod"], "pkill -f 'while :; do :; done' || true", check=False)
    wait_until(lambda: cpu_over(addresses)["prod"] <= 15, 60,
               "prod idle again once the loop ended", interval=0)
