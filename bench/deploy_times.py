"""Wall time of `cdpipe up` from nothing, a canary redeploy and no-change site.yml runs."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.scratch_env import BenchEnv
from cdpipe import PROJECT_ROOT


def site_run(env: BenchEnv) -> float:
    started = time.perf_counter()
    subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i",
         str(env.home / "inventory.yml"), str(PROJECT_ROOT / "playbooks" / "site.yml")],
        env=dict(env.env, ANSIBLE_CONFIG=str(PROJECT_ROOT / "ansible.cfg")),
        capture_output=True, check=True,
    )
    return time.perf_counter() - started


def run(env: BenchEnv) -> list[tuple[str, float, float]]:
    """(what, seconds, goal seconds). Leaves the environment up for later benchmarks."""
    os.environ.pop("CDPIPE_HOME", None)
    up = env.cdpipe("up", "--ref", env.head())
    redeploy = env.cdpipe("deploy", "--ref", env.new_commit("bench redeploy"),
                          "--target", "canary")
    env.cdpipe("deploy", "--ref", env.head(), "--target", "prod")
    noop = statistics.median(site_run(env) for _ in range(3))
    return [
        ("cdpipe up from nothing (app venv built once per instance)", up, 90),
        ("redeploy a new commit to the canary", redeploy, 20),
        ("site.yml again, nothing to change (median of 3 runs)", noop, 15),
    ]
