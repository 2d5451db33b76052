"""The AWS path on the machine rig (``rig/``): `cdpipe up --provider aws` from nothing
(moto's instances become Debian machines, configured over SSH) and a no-change re-run,
each also as a multiple of a bare `ansible all -m ping` of the same machines in the
same run, then `cdpipe down`. Skipped, with the reason, where podman cannot run."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rig import control
from rig.podman import unavailable

CDPIPE = str(Path(sys.executable).parent / "cdpipe")
PING = "ansible all -m ping, the same 4 machines (median of 3)"


def _timed(env: dict[str, str], *args: str) -> float:
    started = time.monotonic()
    out = subprocess.run([CDPIPE, *args], env=env, capture_output=True, text=True,
                         timeout=1800, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"cdpipe {' '.join(args)} failed: {out.stderr.strip()}")
    return time.monotonic() - started


def _ping(env: dict[str, str], inventory: Path) -> float:
    """A bare `ansible all -m ping` over the environment's inventory (median of 3)."""
    ansible = str(Path(sys.executable).parent / "ansible")
    times = []
    for _ in range(3):
        started = time.monotonic()
        subprocess.run([ansible, "all", "-i", str(inventory), "-m", "ansible.builtin.ping"],
                       env=env, capture_output=True, timeout=300, check=True)
        times.append(time.monotonic() - started)
    return statistics.median(times)


def run() -> list[tuple[str, float]]:
    with tempfile.TemporaryDirectory(prefix="cdpipe-bench-rig-") as tmp:
        rig_dir = Path(tmp) / "rig"
        started = time.monotonic()
        info = control.up(rig_dir, hours=1, show=lambda _line: None)
        rows = [("rig up (moto, network; the image when its recipe changed)",
                 time.monotonic() - started)]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CDPIPE_"))}
        env |= control.aws_environment(rig_dir, info) | {"CDPIPE_HOME": str(Path(tmp) / "home")}
        try:
            rows.append(("up --provider aws from nothing (4 machines)",
                         _timed(env, "up", "--provider", "aws")))
            rows.append(("up --provider aws again, nothing changed",
                         _timed(env, "up", "--provider", "aws")))
            rows.append((PING, _ping(env, Path(tmp) / "home" / "inventory.yml")))
            rows.append(("down (terminate, groups, key pair)", _timed(env, "down")))
        finally:
            subprocess.run([CDPIPE, "down"], env=env, capture_output=True, timeout=600,
                           check=False)
            control.down(rig_dir)
    return rows


def report() -> None:
    print("\n## The AWS path on the machine rig (wall clock)")
    reason = unavailable()
    if reason:
        print(f"skipped: {reason}")
        return
    rows = run()
    ping = dict(rows)[PING]
    print(f"| {'step':<58} | seconds | x ping |")
    print(f"|{'-' * 60}|---------|--------|")
    for what, took in rows:
        ratio = f"{took / ping:6.1f}" if what.startswith("up ") else "     -"
        print(f"| {what:<58} | {took:7.1f} | {ratio} |")
