"""Wall time of `cdpipe up` from nothing, a canary redeploy and no-change site.yml runs,
each also as a ratio to a bare `ansible all -m ping` of the same hosts in the same run."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.scratch_env import BenchEnv
from cdpipe import PROJECT_ROOT


def ansible(env: BenchEnv, *args: str) -> float:
    """Runs an Ansible command over the environment's inventory; its wall time."""
    started = time.perf_counter()
    subprocess.run(
        [str(Path(sys.executable).parent / args[0]), "-i", str(env.home / "inventory.yml"),
         *args[1:]],
        env=dict(env.env, ANSIBLE_CONFIG=str(PROJECT_ROOT / "ansible.cfg")),
        capture_output=True, check=True, cwd=PROJECT_ROOT,
    )
    return time.perf_counter() - started


def site_run(env: BenchEnv) -> float:
    return ansible(env, "ansible-playbook", str(PROJECT_ROOT / "playbooks" / "site.yml"))


def ping(env: BenchEnv) -> float:
    """The cost of reaching every host once: the baseline of the ratios."""
    return ansible(env, "ansible", "all", "-m", "ansible.builtin.ping")


def run(env: BenchEnv) -> tuple[float, list[tuple[str, float, float]]]:
    """(ping seconds, [(what, seconds, goal as a multiple of ping)]).

    Leaves the environment up for later benchmarks."""
    os.environ.pop("CDPIPE_HOME", None)
    up = env.cdpipe("up", "--ref", env.head())
    redeploy = env.cdpipe("deploy", "--ref", env.new_commit("bench redeploy"),
                          "--target", "canary")
    env.cdpipe("deploy", "--ref", env.head(), "--target", "prod")
    noop = statistics.median(site_run(env) for _ in range(3))
    scale_out = env.cdpipe("scale", "out", "--max", "2")
    scale_in = env.cdpipe("scale", "in")
    baseline = statistics.median(ping(env) for _ in range(3))
    return baseline, [
        ("cdpipe up from nothing (4 sandboxes, both apps deployed)", up, 40),
        ("redeploy a new commit to the canary", redeploy, 5),
        ("site.yml again, nothing to change (median of 3 runs)", noop, 5),
        ("cdpipe scale out --max 2 by hand, until the new prod serves", scale_out, 8),
        ("cdpipe scale in", scale_in, 8),
    ]
