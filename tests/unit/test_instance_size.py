"""A local instance is a machine of a declared size: the arithmetic of its percentages,
the control-group files it is read from (v1 and v2, on fake hierarchies), the settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from cdpipe.config import Settings
from cdpipe.errors import CdpipeError
from cdpipe.providers.local.sizing import Sizing
from cdpipe_host.cgroup import Group, Hierarchies, find_hierarchies, parse_mountinfo
from cdpipe_host.resource_usage import MIB, ResourceUsage, Size, cpu_percent, memory_percent

HYBRID = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""


def test_cpu_percent_is_relative_to_the_declared_cpus() -> None:
    # One busy core for 2 s: a whole 1-vCPU instance, half of a 2-vCPU one.
    assert cpu_percent(2.0, 2.0, 1) == 100
    assert cpu_percent(2.0, 2.0, 2) == 50
    assert cpu_percent(0.25, 1.0, 0.5) == 50
    # A tree without a limit can use more than it declares: still at most 100%.
    assert cpu_percent(3.0, 1.0, 1) == 100
    assert cpu_percent(-1.0, 1.0, 1) == 0
    assert cpu_percent(1.0, 0.0, 1) == 0


def test_memory_percent_is_relative_to_the_declared_memory() -> None:
    assert memory_percent(256 * MIB, 1024 * MIB) == 25
    assert memory_percent(2048 * MIB, 1024 * MIB) == 100


def test_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        Size(0, MIB)


def test_mountinfo_of_a_hybrid_host() -> None:
    v1, v2 = parse_mountinfo(HYBRID)
    assert v1 == {"cpu": Path("/sys/fs/cgroup/cpu"), "cpuacct": Path("/sys/fs/cgroup/cpuacct"),
                  "memory": Path("/sys/fs/cgroup/memory")}
    assert v2 == Path("/sys/fs/cgroup/unified")


def test_v2_is_preferred_when_it_has_the_controllers(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    text = f"41 31 0:38 / {tmp_path} rw - cgroup2 cgroup2 rw\n" + HYBRID.splitlines()[1]
    found, why = find_hierarchies(text)
    assert found == Hierarchies(2, {"cpu": tmp_path, "memory": tmp_path}) and why == ""


def test_a_hybrid_v2_without_controllers_falls_to_v1(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("hugetlb\n")
    text = HYBRID.replace("/sys/fs/cgroup/unified", str(tmp_path))
    found, _ = find_hierarchies(text)
    assert found is not None and found.version == 1


def test_no_controllers_says_why() -> None:
    found, why = find_hierarchies(HYBRID.splitlines()[0])
    assert found is None and "cpu and memory controllers" in why


def v2_root(tmp_path: Path) -> Path:
    root = tmp_path / "v2"
    root.mkdir()
    (root / "cgroup.subtree_control").write_text("")
    return root


def test_v2_group_hands_controllers_down_and_sets_limits(tmp_path: Path) -> None:
    root = v2_root(tmp_path)
    # A real cgroupfs makes these files in a new directory; here the test does.
    (root / "cdpipe-x").mkdir()
    (root / "cdpipe-x" / "cgroup.subtree_control").write_text("")
    group = Group(Hierarchies(2, {"cpu": root, "memory": root}), "cdpipe-x/prod-1")
    group.create(1.5, 512 * MIB)
    assert (root / "cgroup.subtree_control").read_text() == "+cpu +memory"
    assert (root / "cdpipe-x" / "cgroup.subtree_control").read_text() == "+cpu +memory"
    assert (root / "cdpipe-x/prod-1/cpu.max").read_text() == "150000 100000"
    assert (root / "cdpipe-x/prod-1/memory.max").read_text() == str(512 * MIB)


def test_v2_usage_is_what_docker_stats_reads(tmp_path: Path) -> None:
    root = v2_root(tmp_path)
    d = root / "g"
    d.mkdir()
    (d / "cpu.stat").write_text("usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n")
    (d / "memory.current").write_text(str(300 * MIB))
    (d / "memory.stat").write_text(f"anon {200 * MIB}\ninactive_file {100 * MIB}\n")
    group = Group(Hierarchies(2, {"cpu": root, "memory": root}), "g")
    assert group.usage() == (2.5, 200 * MIB)


def v1_group(tmp_path: Path) -> Group:
    roots = {c: tmp_path / c for c in ("cpu", "cpuacct", "memory")}
    return Group(Hierarchies(1, roots), "cdpipe-x/prod-1")


def test_v1_group_sets_limits_in_each_hierarchy(tmp_path: Path) -> None:
    group = v1_group(tmp_path)
    group.create(1, 1024 * MIB)
    d = tmp_path / "cpu/cdpipe-x/prod-1"
    assert (d / "cpu.cfs_quota_us").read_text() == "100000"
    assert (d / "cpu.cfs_period_us").read_text() == "100000"
    assert (tmp_path / "memory/cdpipe-x/prod-1/memory.limit_in_bytes").read_text() == str(
        1024 * MIB)
    assert group.exists()


def test_v1_usage_and_membership(tmp_path: Path) -> None:
    group = v1_group(tmp_path)
    group.create(1, 1024 * MIB)
    (tmp_path / "cpuacct/cdpipe-x/prod-1/cpuacct.usage").write_text("1500000000\n")
    mem = tmp_path / "memory/cdpipe-x/prod-1"
    (mem / "memory.usage_in_bytes").write_text(str(64 * MIB))
    (mem / "memory.stat").write_text(f"cache {8 * MIB}\ntotal_inactive_file {4 * MIB}\n")
    assert group.usage() == (1.5, 60 * MIB)
    inside = "4:memory:/cdpipe-x/prod-1\n2:cpuacct:/cdpipe-x/prod-1\n1:cpu:/cdpipe-x/prod-1\n0::/"
    assert group.holds(inside)
    assert not group.holds(inside.replace("4:memory:/cdpipe-x/prod-1", "4:memory:/"))
    v2 = Group(Hierarchies(2, {"cpu": tmp_path, "memory": tmp_path}), "cdpipe-x/prod-1")
    assert v2.holds("0::/cdpipe-x/prod-1\n") and not v2.holds("0::/user.slice\n")


def test_reading_a_group_over_time(tmp_path: Path) -> None:
    """Two readings 4 s apart, 2 CPU seconds between them: 50% of 1 vCPU, 25% of 2."""
    group = v1_group(tmp_path)
    group.create(1, 1024 * MIB)
    usage_file = tmp_path / "cpuacct/cdpipe-x/prod-1/cpuacct.usage"
    mem = tmp_path / "memory/cdpipe-x/prod-1"
    (mem / "memory.usage_in_bytes").write_text(str(256 * MIB))
    (mem / "memory.stat").write_text("total_inactive_file 0\n")
    now = [100.0]
    for vcpus, expected in ((1, 50.0), (2, 25.0)):
        usage_file.write_text("10000000000")
        reader = ResourceUsage("tree", size=Size(vcpus, 1024 * MIB), clock=lambda: now[0])
        reader.group, reader._last = group, (now[0], 10.0)
        now[0] += 4
        usage_file.write_text("12000000000")
        assert reader.read() == (expected, 25.0)
        assert reader.source == "cgroup"


def test_settings_of_the_size_are_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    from cdpipe.config import load

    settings = Settings()
    assert (settings.local_vcpus, settings.local_memory_mb, settings.local_cgroups) == (
        1.0, 1024, "auto")
    for name, value in (("CDPIPE_LOCAL_VCPUS", "0"), ("CDPIPE_LOCAL_MEMORY_MB", "16"),
                        ("CDPIPE_LOCAL_CGROUPS", "maybe")):
        monkeypatch.setenv(name, value)
        with pytest.raises(CdpipeError, match=f"bad setting {name}"):
            load()
        monkeypatch.delenv(name)


def test_a_size_larger_than_the_host_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CdpipeError, match="CDPIPE_LOCAL_VCPUS=64 is more than this host"):
        Sizing(Settings(home=tmp_path, local_vcpus=64)).check()
    with pytest.raises(CdpipeError, match="CDPIPE_LOCAL_MEMORY_MB=1048576 is more than"):
        Sizing(Settings(home=tmp_path, local_memory_mb=1024 * 1024)).check()


def test_without_cgroups_the_sandboxes_are_sized_but_not_limited(tmp_path: Path) -> None:
    sizing = Sizing(Settings(home=tmp_path, local_cgroups="off", local_vcpus=0.5))
    assert sizing.group("prod-1") is None
    assert sizing.host_vars("prod-1") == {"cdpipe_instance_vcpus": 0.5,
                                          "cdpipe_instance_memory_mb": 1024,
                                          "cdpipe_instance_cgroup": ""}
    assert sizing.note() == (
        "local instances are 0.5 vCPU, 1024 MiB each, not limited: no control groups here "
        "(CDPIPE_LOCAL_CGROUPS=off); CPU and memory are read from their processes relative "
        "to that size")


def test_groups_are_named_by_home_and_instance(tmp_path: Path) -> None:
    a, b = (Sizing(Settings(home=tmp_path / h)) for h in ("a", "b"))
    if a.hierarchies is None:
        pytest.skip("no writable control groups on this host")
    name_a = a.host_vars("prod-1")["cdpipe_instance_cgroup"]
    assert name_a.startswith("cdpipe-") and name_a.endswith("/prod-1")
    assert name_a != b.host_vars("prod-1")["cdpipe_instance_cgroup"]
