"""Two actors that share only the environment's Redis, as on AWS (a Jenkins agent
deploying, the monitor's machine scaling out with its own CDPIPE_HOME): started at the
same moment, they run one after the other, the second waiting for the first's
environment lock. Real `cdpipe` processes on the session's real local environment."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pytest

from cdpipe import socket_dir
from cdpipe_host.keys import ENV_LOCK
from tests.e2e.conftest import CDPIPE, LocalEnv

pytestmark = pytest.mark.e2e
TOOK = re.compile(r"^took the environment lock at (\S+Z) \(")
RELEASING = re.compile(r"^releasing the environment lock at (\S+Z)$")
WAITING = "waiting for the environment lock: held by "


@dataclass
class Actor:
    """A cdpipe process whose output lines are stamped with the time they arrived."""

    name: str
    args: list[str]
    env: dict[str, str]
    lines: list[tuple[float, str]] = field(default_factory=list)
    ended: float = 0.0
    code: int | None = None

    def run(self, go: threading.Event) -> None:
        go.wait()
        proc = subprocess.Popen([CDPIPE, *self.args], env=self.env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert proc.stdout is not None
        for line in proc.stdout:
            self.lines.append((time.time(), line.rstrip("\n")))
        self.code = proc.wait(900)
        self.ended = time.time()

    def when(self, pattern: re.Pattern[str]) -> datetime:
        """The time the process printed in its one line that matches ``pattern``."""
        found = [m[1] for _, line in self.lines if (m := pattern.match(line))]
        assert len(found) == 1, (pattern.pattern, self.text())
        return datetime.fromisoformat(found[0])

    def took(self) -> datetime:
        """Taken after it held the lock: not before it did."""
        return self.when(TOOK)

    def releasing(self) -> datetime:
        """Taken before it let the lock go: it still held it then."""
        return self.when(RELEASING)

    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)


def second_checkout(env: LocalEnv, home: Path) -> dict[str, str]:
    """Another CDPIPE_HOME that drives the same environment: a copy of the state file
    and the secrets (what a second machine would be given), the same sandboxes' sockets
    (their runtime directory is keyed by the first home)."""
    home.mkdir()
    shutil.copy2(env.home / "state.json", home / "state.json")
    shutil.copytree(env.home / "secrets", home / "secrets")
    other = dict(env.env, CDPIPE_HOME=str(home), PYTHONUNBUFFERED="1",
                 CDPIPE_RUNTIME_DIR=env.env.get("CDPIPE_RUNTIME_DIR")
                 or str(socket_dir.default_for(env.home)))
    return other


def test_a_deploy_and_a_scale_out_started_together_run_one_after_the_other(
        clean_env: LocalEnv, tmp_path: Path) -> None:
    env = clean_env
    monitor_home = tmp_path / "monitor-home"
    jenkins = Actor("deploy", ["deploy", "--ref", env.new],
                    dict(env.env, PYTHONUNBUFFERED="1"))
    monitor = Actor("scale out", ["scale", "out", "--max", "2"],
                    second_checkout(env, monitor_home))
    go = threading.Event()
    threads = [threading.Thread(target=a.run, args=(go,)) for a in (jenkins, monitor)]
    for t in threads:
        t.start()
    go.set()
    try:
        for t in threads:
            t.join(1200)
        assert (jenkins.code, monitor.code) == (0, 0), (jenkins.text(), monitor.text())
        first, second = sorted((jenkins, monitor), key=Actor.took)
        # Each held it from took to releasing (at least); the intervals do not overlap:
        # the second took the lock only once the first was letting it go ...
        assert first.took() < first.releasing() <= second.took() < second.releasing(), (
            first.text(), second.text())
        # ... after waiting for it, naming the first as its holder.
        assert f"{WAITING}{first.name} on " in second.text(), second.text()
        assert WAITING not in first.text(), first.text()
        assert env.redis().exists(ENV_LOCK) == 0  # both released it
        held = (first.releasing() - first.took()).total_seconds()
        waited = second.took().timestamp() - second.lines[0][0]
        print(f"{first.name} held the lock {held:.1f} s; {second.name} waited {waited:.1f} s")
    finally:
        # The scaled-out instance is the second checkout's: it scales it in again.
        if monitor.code == 0:
            out = subprocess.run([CDPIPE, "scale", "in"], env=monitor.env, text=True,
                                 capture_output=True, timeout=600, check=False)
            assert out.returncode == 0, out.stdout + out.stderr
        shutil.rmtree(monitor_home, ignore_errors=True)
        assert not os.path.exists(monitor_home)
