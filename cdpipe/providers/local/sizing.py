"""The size of local instances: each sandbox is a machine of the declared size.

Where the host allows it (root, a cgroup hierarchy with the cpu and memory controllers),
each sandbox's supervisor starts in a control group of its own,
``cdpipe-<hash of CDPIPE_HOME>/<instance id>``, limited to ``CDPIPE_LOCAL_VCPUS`` and
``CDPIPE_LOCAL_MEMORY_MB``; every program of the sandbox inherits it, and the metrics
are read from it. Elsewhere the sandboxes are not limited and the metrics come from
their process trees, still relative to the declared size.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from cdpipe.config import Settings
from cdpipe.errors import CdpipeError
from cdpipe_host.cgroup import Group, Hierarchies, find_hierarchies
from cdpipe_host.resource_usage import MIB, Size

OFF_HINT = "set CDPIPE_LOCAL_CGROUPS=off to run the sandboxes without limits"


@dataclass(frozen=True)
class SandboxGroup:
    """The control group of one sandbox and the size it enforces."""

    group: Group
    size: Size

    def prepare(self) -> None:
        try:
            self.group.create(self.size.vcpus, self.size.memory_bytes)
        except OSError as exc:
            raise CdpipeError(f"cannot make control group {self.group.name} "
                              f"({exc.strerror or exc}); {OFF_HINT}") from None

    def join(self) -> None:
        """Move the calling process into the group (run in the child, before exec)."""
        self.group.add(0)

    def remove(self) -> None:
        try:
            self.group.remove()
        except OSError as exc:
            raise CdpipeError(f"cannot remove control group {self.group.name} "
                              f"({exc.strerror or exc}): processes {sorted(self.group.pids())} "
                              "are still in it") from None


def probe(settings: Settings) -> tuple[Hierarchies | None, str]:
    """The hierarchies to limit sandboxes with, or None and why not."""
    if settings.local_cgroups == "off":
        return None, "CDPIPE_LOCAL_CGROUPS=off"
    hierarchies, why = find_hierarchies()
    if hierarchies is None:
        return None, why
    for root in hierarchies.dirs():
        if not os.access(root, os.W_OK):
            return None, f"{root} is not writable (run as root, or delegate it)"
    return hierarchies, ""


class Sizing:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.size = Size(settings.local_vcpus, settings.local_memory_mb * MIB)
        self._probed: tuple[Hierarchies | None, str] | None = None
        self._prefix = "cdpipe-" + hashlib.sha256(
            str(settings.home.resolve()).encode()).hexdigest()[:10]

    @property
    def hierarchies(self) -> Hierarchies | None:
        if self._probed is None:
            self._probed = probe(self.settings)
        return self._probed[0]

    def check(self) -> None:
        """One line when the declared size does not fit this host."""
        cpus = psutil.cpu_count() or 1
        if self.settings.local_vcpus > cpus:
            raise CdpipeError(f"CDPIPE_LOCAL_VCPUS={self.settings.local_vcpus:g} is more than "
                              f"this host's {cpus} CPUs; declare at most {cpus}")
        total = psutil.virtual_memory().total // MIB
        if self.settings.local_memory_mb > total:
            raise CdpipeError(f"CDPIPE_LOCAL_MEMORY_MB={self.settings.local_memory_mb} is more "
                              f"than this host's {total} MiB; declare less")

    def note(self) -> str:
        """What a local instance is, in one line for the output of provision."""
        what = f"{self.settings.local_vcpus:g} vCPU, {self.settings.local_memory_mb} MiB"
        if self.hierarchies is not None:
            return (f"local instances are {what} each, limited by cgroup v"
                    f"{self.hierarchies.version} groups {self._prefix}/<instance>")
        assert self._probed is not None
        return (f"local instances are {what} each, not limited: no control groups here "
                f"({self._probed[1]}); CPU and memory are read from their processes "
                "relative to that size")

    def group(self, instance_id: str) -> SandboxGroup | None:
        if self.hierarchies is None:
            return None
        return SandboxGroup(Group(self.hierarchies, f"{self._prefix}/{instance_id}"),
                            self.size)

    def leave_sandbox(self) -> bool:
        """Move the calling process out of this environment's sandbox groups, if it is in
        one: the control plane is no instance. (The monitor runs ``cdpipe scale`` inside
        the proxy's sandbox; on AWS that command may run on the control machine. Its
        Ansible run is then neither limited by the proxy's size nor counted in it.)"""
        hierarchies = self.hierarchies
        try:
            mine = Path("/proc/self/cgroup").read_text(encoding="utf-8")
        except OSError:
            return False
        if hierarchies is None or f"/{self._prefix}/" not in mine:
            return False
        for root in hierarchies.dirs():
            with open(root / "cgroup.procs", "w", encoding="ascii") as f:
                f.write("0")
        return True

    def remove_leftover(self, instance_id: str) -> None:
        """Remove the instance's group if one is left, made when the setting was ``auto``."""
        hierarchies, _ = find_hierarchies()
        if hierarchies is not None:
            group = Group(hierarchies, f"{self._prefix}/{instance_id}")
            if any(d.is_dir() for d in group.dirs()):
                SandboxGroup(group, self.size).remove()

    def host_vars(self, instance_id: str) -> dict[str, Any]:
        box = self.group(instance_id)
        return {"cdpipe_instance_vcpus": self.settings.local_vcpus,
                "cdpipe_instance_memory_mb": self.settings.local_memory_mb,
                "cdpipe_instance_cgroup": box.group.name if box else ""}
