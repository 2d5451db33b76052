"""Control groups of local sandboxes: one group per instance, limited to the instance's
declared size, so that it is a machine of that size as a container is.

A group has the same name (``cdpipe-<hash>/<instance id>``) under every hierarchy that
holds the controllers it needs: the one cgroup v2 hierarchy when it has the ``cpu`` and
``memory`` controllers, else the v1 hierarchies of ``cpu``, ``cpuacct`` and ``memory``
(a hybrid host). Usage is read as ``docker stats`` reads it: CPU time from ``cpu.stat``
``usage_usec`` (v1: ``cpuacct.usage``), memory as ``memory.current`` less the page cache
that can be dropped (``inactive_file``; v1: ``memory.usage_in_bytes`` less
``total_inactive_file``).
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

CPU_PERIOD_US = 100_000
V1_CONTROLLERS = ("cpu", "cpuacct", "memory")
V2_CONTROLLERS = ("cpu", "memory")


@dataclass(frozen=True)
class Hierarchies:
    """Where each controller's hierarchy is mounted: version 2, one directory for all;
    version 1, one per controller (some may share a mount, as ``cpu,cpuacct``)."""

    version: int
    roots: dict[str, Path]

    def dirs(self) -> list[Path]:
        return sorted(set(self.roots.values()))


def parse_mountinfo(text: str) -> tuple[dict[str, Path], Path | None]:
    """(v1 controller -> mount point, the v2 mount point) from /proc/self/mountinfo."""
    v1: dict[str, Path] = {}
    v2: Path | None = None
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 5 or len(tail) < 3:
            continue
        mount = Path(fields[4])
        if tail[0] == "cgroup2":
            v2 = v2 or mount
        elif tail[0] == "cgroup":
            for option in tail[2].split(","):
                if option in V1_CONTROLLERS:
                    v1.setdefault(option, mount)
    return v1, v2


def find_hierarchies(mountinfo: str | None = None) -> tuple[Hierarchies | None, str]:
    """The hierarchies to make groups in, or None and why there are none."""
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text(encoding="utf-8")
        except OSError as exc:
            return None, f"cannot read /proc/self/mountinfo ({exc.strerror})"
    v1, v2 = parse_mountinfo(mountinfo)
    if v2 is not None:
        try:
            controllers = (v2 / "cgroup.controllers").read_text(encoding="utf-8").split()
        except OSError:
            controllers = []
        if set(V2_CONTROLLERS) <= set(controllers):
            return Hierarchies(2, {c: v2 for c in V2_CONTROLLERS}), ""
    if all(c in v1 for c in V1_CONTROLLERS):
        return Hierarchies(1, {c: v1[c] for c in V1_CONTROLLERS}), ""
    return None, "no cgroup hierarchy with the cpu and memory controllers is mounted"


def _write(path: Path, value: str) -> None:
    with open(path, "w", encoding="ascii") as f:
        f.write(value)


def _stat(path: Path) -> dict[str, int]:
    """A flat keyed file (``cpu.stat``, ``memory.stat``) as a dict."""
    out: dict[str, int] = {}
    for line in path.read_text(encoding="ascii").splitlines():
        key, _, value = line.partition(" ")
        with contextlib.suppress(ValueError):
            out[key] = int(value)
    return out


@dataclass(frozen=True)
class Group:
    hierarchies: Hierarchies
    name: str  # relative to each hierarchy's root, e.g. cdpipe-1a2b3c4d5e/prod-1

    def dir(self, controller: str) -> Path:
        return self.hierarchies.roots[controller] / self.name

    def dirs(self) -> list[Path]:
        return [root / self.name for root in self.hierarchies.dirs()]

    def exists(self) -> bool:
        return all(d.is_dir() for d in self.dirs())

    def create(self, vcpus: float, memory_bytes: int) -> None:
        """Make the group (idempotent) and set its limits: ``vcpus`` CPUs' worth of time
        per period, ``memory_bytes`` of memory."""
        quota = max(1000, round(vcpus * CPU_PERIOD_US))
        if self.hierarchies.version == 2:
            root = self.hierarchies.roots["cpu"]
            parts = Path(self.name).parts
            # Each ancestor hands the controllers down to its children.
            for depth in range(len(parts)):
                parent = root.joinpath(*parts[:depth])
                wanted = " ".join("+" + c for c in V2_CONTROLLERS)
                present = (parent / "cgroup.subtree_control").read_text().split()
                if not set(V2_CONTROLLERS) <= set(present):
                    _write(parent / "cgroup.subtree_control", wanted)
                (parent / parts[depth]).mkdir(exist_ok=True)
            _write(self.dir("cpu") / "cpu.max", f"{quota} {CPU_PERIOD_US}")
            _write(self.dir("memory") / "memory.max", str(memory_bytes))
            return
        for directory in self.dirs():
            directory.mkdir(parents=True, exist_ok=True)
        _write(self.dir("cpu") / "cpu.cfs_period_us", str(CPU_PERIOD_US))
        _write(self.dir("cpu") / "cpu.cfs_quota_us", str(quota))
        _write(self.dir("memory") / "memory.limit_in_bytes", str(memory_bytes))

    def add(self, pid: int = 0) -> None:
        """Move a process (0: the calling one) into the group; its children inherit it."""
        for directory in self.dirs():
            _write(directory / "cgroup.procs", str(pid))

    def pids(self) -> set[int]:
        found: set[int] = set()
        for directory in self.dirs():
            with contextlib.suppress(OSError):
                text = (directory / "cgroup.procs").read_text(encoding="ascii")
                found |= {int(p) for p in text.split()}
        return found

    def remove(self, timeout: float = 5) -> None:
        """Remove the group once its processes are gone, then its parent when empty."""
        deadline = time.monotonic() + timeout
        for directory in self.dirs():
            while directory.is_dir():
                try:
                    directory.rmdir()
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)  # exiting processes leave the group a little later
            with contextlib.suppress(OSError):
                directory.parent.rmdir()

    def usage(self) -> tuple[float, int]:
        """(CPU seconds used since the group was made, memory in use in bytes)."""
        if self.hierarchies.version == 2:
            cpu = _stat(self.dir("cpu") / "cpu.stat")["usage_usec"] / 1e6
            current = int((self.dir("memory") / "memory.current").read_text())
            cache = _stat(self.dir("memory") / "memory.stat").get("inactive_file", 0)
        else:
            cpu = int((self.dir("cpuacct") / "cpuacct.usage").read_text()) / 1e9
            current = int((self.dir("memory") / "memory.usage_in_bytes").read_text())
            cache = _stat(self.dir("memory") / "memory.stat").get("total_inactive_file", 0)
        return cpu, max(0, current - cache)

    def holds(self, proc_cgroup: str) -> bool:
        """Whether a process whose /proc/<pid>/cgroup reads ``proc_cgroup`` is in it."""
        wanted = "/" + self.name
        paths: dict[str, str] = {}
        for line in proc_cgroup.splitlines():
            _, controllers, path = [*line.split(":", 2), "", ""][:3]
            if self.hierarchies.version == 2 and controllers == "":
                return path == wanted
            for controller in controllers.split(","):
                paths[controller] = path
        return self.hierarchies.version == 1 and all(
            paths.get(c) == wanted for c in V1_CONTROLLERS)


def own_group(name: str) -> Group | None:
    """The group ``name`` when this process is in it, else None."""
    hierarchies, _ = find_hierarchies()
    if hierarchies is None:
        return None
    group = Group(hierarchies, name)
    try:
        mine = Path(f"/proc/{os.getpid()}/cgroup").read_text(encoding="utf-8")
    except OSError:
        return None
    return group if group.holds(mine) else None
