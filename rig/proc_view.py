"""Each machine's own view of its CPU and memory, as an EC2 instance has it.

A container reads the host's /proc, so without this every machine of the rig would see
the host's CPU and memory: an idle machine reads what the whole host is busy with.
lxcfs (Debian's package, a FUSE file system) serves /proc files computed from the
control group of the process that reads them; the rig mounts one lxcfs for its
lifetime and binds its files over each machine's /proc, and gives every machine a CPU
and memory limit (its "instance size"), which lxcfs shows as the machine's CPUs
(``--enable-cfs``) and memory.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

# The /proc files lxcfs serves that psutil reads for CPU, memory, load and uptime.
PROC_FILES = ("cpuinfo", "meminfo", "stat", "uptime", "loadavg", "diskstats", "swaps")
# Every machine's size: one CPU (a CFS quota) and 1 GiB (a t3.micro's memory).
MACHINE_CPUS = "1"
MACHINE_MEMORY = "1g"


class ProcView:
    """One lxcfs mounted at ``mountpoint`` while the rig runs."""

    def __init__(self, mountpoint: Path) -> None:
        self.mountpoint = mountpoint
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10) -> None:
        if shutil.which("lxcfs") is None:
            raise RuntimeError("rig: lxcfs is missing (scripts/bootstrap installs it)")
        self.stop()  # a mount left by a rig that was killed
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        log = (self.mountpoint.parent / "lxcfs.log").open("ab")
        self.proc = subprocess.Popen(
            ["lxcfs", "--foreground", "--enable-cfs", "--enable-loadavg",
             "--pidfile", str(self.mountpoint.parent / "lxcfs.pid"), str(self.mountpoint)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while not (self.mountpoint / "proc" / "stat").exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("rig: lxcfs did not mount (see lxcfs.log beside it)")
            time.sleep(0.05)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def podman_options(self) -> list[str]:
        """The options of ``podman create`` that give a machine its size and its view."""
        options = ["--cpus", MACHINE_CPUS, "--memory", MACHINE_MEMORY]
        for name in PROC_FILES:
            options += ["--volume", f"{self.mountpoint}/proc/{name}:/proc/{name}:rw"]
        return options

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None
        if self.mounted():
            subprocess.run(["umount", "--lazy", str(self.mountpoint)], check=False,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def mounted(self) -> bool:
        """Whether something is mounted there (a dead FUSE mount too, which no stat of
        the folder itself can tell)."""
        target = str(self.mountpoint.resolve())
        with open("/proc/self/mounts", encoding="utf-8") as mounts:
            return any(line.split()[1] == target for line in mounts if line.strip())
