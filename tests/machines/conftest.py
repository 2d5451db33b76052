"""One AWS environment on the machine rig, shared by the machine tests of a session.

A rig (``rig/``) turns every instance its moto server launches into a Debian machine
reachable over SSH at the instance's private address; ``cdpipe up --provider aws``
then provisions and configures them exactly as on EC2. The environment deploys a
this checkout, which the rig serves over git://: ``old`` is HEAD, ``new`` a second commit
of HEAD's tree on a branch made for the session and deleted after it (refs resolve in
the checkout cdpipe runs from, as in a Jenkins workspace).
Everything is removed at the end (``cdpipe down``, then the rig's own teardown).

Outside CI, where podman cannot run, the suite skips with the reason; with
``CDPIPE_REQUIRE_MACHINES=1`` (set by ``.ci/run``) it fails instead. While developing,
``CDPIPE_MACHINES_REUSE=.rig`` runs the tests on the rig and environment of `make
machines` and leaves them up.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from cdpipe import PROJECT_ROOT
from devkit import git
from devkit.roles import role_defaults
from rig import control
from rig.podman import podman, unavailable
from rig.server import RigInfo

CDPIPE = str(Path(sys.executable).parent / "cdpipe")
# A machine test's bound (pytest-timeout): its first test also brings the rig up and runs
# `up --provider aws` twice, minutes of apt and pip on machines that share two cores.
MACHINE_TEST_TIMEOUT = 1500
SSH_OPTIONS = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
               "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10"]


@dataclass
class MachinesEnv:
    rig_dir: Path
    rig: RigInfo
    home: Path
    repo: Path
    env: dict[str, str]
    old: str
    new: str
    timings: dict[str, float] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)

    def cdpipe(self, *args: str, check: bool = True, timeout: float = 1200,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        out = subprocess.run([CDPIPE, *args], env=env or self.env, capture_output=True,
                             text=True, timeout=timeout, check=False)
        if check and out.returncode != 0:
            raise AssertionError(f"cdpipe {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")
        return out

    def status(self) -> dict:  # type: ignore[type-arg]
        return json.loads(self.cdpipe("status", "--json").stdout)  # type: ignore[no-any-return]

    def address(self, role: str) -> str:
        return next(i["url"].split("//")[1].rsplit(":", 1)[0]
                    for i in self.status()["instances"] if i["role"] == role)

    def instance_id(self, role: str) -> str:
        return next(str(i["id"]) for i in self.status()["instances"] if i["role"] == role)

    @property
    def key(self) -> Path:
        return self.rig_dir / "id_ed25519"

    def ssh(self, address: str, command: str, check: bool = True) -> str:
        out = subprocess.run(["ssh", *SSH_OPTIONS, "-i", str(self.key), f"admin@{address}",
                              command], capture_output=True, text=True, timeout=120,
                             check=False)
        if check and out.returncode != 0:
            raise AssertionError(f"ssh {address} {command!r}: {out.stderr.strip()}")
        return out.stdout

    def machine(self, instance_id: str) -> str:
        return f"rig-{self.rig.rig_id}-{instance_id}"


def monitor_rules(directory: Path, scaling: bool) -> Path:
    """The monitor role's default rules (roles/monitor/defaults/main/) as a rules file:
    as they are, or without their scaling (alerts only)."""
    defaults = role_defaults("monitor")
    rules = [dict(rule) for rule in defaults["monitor_rules"]]
    if not scaling:
        for rule in rules:
            rule.pop("scale", None)
            rule.pop("lower", None)
    path = directory / ("default-rules.yml" if scaling else "alert-rules.yml")
    path.write_text(yaml.safe_dump({"rules": rules}), encoding="utf-8")
    return path


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.timeout(MACHINE_TEST_TIMEOUT))


def _require_machines() -> None:
    reason = unavailable()
    if reason is None:
        return
    if os.environ.get("CDPIPE_REQUIRE_MACHINES") == "1":
        pytest.fail(f"the machine suite must run here, but {reason}")
    pytest.skip(f"machines cannot run here: {reason}")


@pytest.fixture(scope="session")
def machines_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MachinesEnv]:
    _require_machines()
    root = tmp_path_factory.mktemp("machines")
    repo = PROJECT_ROOT
    old = git(repo, "rev-parse", "HEAD")
    # A second commit of the same tree, on a branch of its own for the session (a shallow
    # clone may have no HEAD~1; the same tree keeps the app in step with the roles).
    new = subprocess.run(
        ["git", "-C", str(repo), "commit-tree", "HEAD^{tree}", "-p", "HEAD", "-m",
         "machine suite: a second commit of HEAD's tree"], capture_output=True, text=True,
        check=True, env=os.environ | {
            "GIT_AUTHOR_NAME": "cdpipe tests", "GIT_AUTHOR_EMAIL": "tests@cdpipe.invalid",
            "GIT_COMMITTER_NAME": "cdpipe tests",
            "GIT_COMMITTER_EMAIL": "tests@cdpipe.invalid"}).stdout.strip()
    branch = f"cdpipe-machine-suite-{new[:8]}"
    git(repo, "branch", "--force", branch, new)
    reuse = os.environ.get("CDPIPE_MACHINES_REUSE")  # a running rig's dir (developing)
    rig_dir = Path(reuse) if reuse else root / "rig"
    started = time.monotonic()
    info = control.running(rig_dir) if reuse else control.up(rig_dir, hours=1.5)
    if info is None:
        pytest.fail(f"CDPIPE_MACHINES_REUSE={reuse}: no rig runs there")
    timings = {"rig up": time.monotonic() - started}
    home = rig_dir / "home" if reuse else root / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CDPIPE_"))}
    env |= control.aws_environment(rig_dir, info) | {"CDPIPE_HOME": str(home)}
    machines = MachinesEnv(rig_dir, info, home, repo, env, old, new, timings)
    if reuse:
        try:
            yield machines  # the developer's rig and environment stay up
        finally:
            git(repo, "branch", "-D", branch)
        return
    try:
        yield machines
    finally:
        try:
            machines.cdpipe("down", check=False, timeout=600)
        finally:
            control.down(rig_dir)
            git(repo, "branch", "-D", branch)
        leftover = podman("ps", "--all", "--quiet", "--filter",
                          f"label=io.cdpipe.rig={info.rig_id}", check=False).split()
        if leftover:
            podman("rm", "--force", *leftover, check=False)


@pytest.fixture(scope="session")
def deployed(machines_env: MachinesEnv) -> MachinesEnv:
    """`cdpipe up --provider aws` from nothing, then again (the second changes nothing).
    The monitor alerts by its default rules but does not scale: every machine reads its
    own CPU, so an idle prod reads below the scale-in bound and the monitor would take
    back the instance a test scales out by hand (the self-scaling test gives it the
    default rules with their scaling)."""
    rules = monitor_rules(machines_env.home.parent, scaling=False)
    for run in ("first up", "second up"):
        started = time.monotonic()
        options = ["--monitor-rules", str(rules)] if run == "first up" else []
        out = machines_env.cdpipe("up", "--provider", "aws", "--ref", machines_env.new,
                                  *options)
        machines_env.timings[run] = time.monotonic() - started
        machines_env.outputs[run] = out.stdout + out.stderr
    return machines_env
