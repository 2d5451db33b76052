"""Self-scaling on the machine rig: the figures `tests/machines/test_self_scaling.py`
measures while the monitor on the proxy machine scales prod out and back in on its own
(a breach held -> a new machine serving, net of the polls the rule needs; the drain
before scale-in; AWS API calls the machines make per quiet poll and per scale-out,
counted by the rig at moto's door). Runs the test on a rig of its own (some 30 min)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from cdpipe import PROJECT_ROOT
from rig.podman import unavailable

TEST = "tests/machines/test_self_scaling.py::test_a_cpu_breach_scales_out_and_back_in_" \
       "through_the_proxy_machine_alone"
ROWS = [
    ("breach_to_launch_s", "breach held -> the scaler's RunInstances done (s)"),
    ("breach_to_serving_s", "breach held -> new machine serving through the proxy (s)"),
    ("breach_to_serving_net_of_polls_s", "the same, net of the polls the rule needs (s)"),
    ("load_gone_to_terminated_s", "load gone -> newest autoscaled machine terminated (s)"),
    ("last_request_to_terminated_s", "its last request -> terminated (drain, s)"),
    ("aws_calls_per_quiet_poll", "AWS API calls per poll when nothing changes"),
    ("aws_calls_scale_out", "AWS API calls of one scale-out (all machines)"),
    ("failed_requests", "failed requests under the steady load"),
]


def run() -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="cdpipe-bench-scaling-") as tmp:
        figures = Path(tmp) / "figures.json"
        out = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", TEST],
            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=5400, check=False,
            env=os.environ | {"CDPIPE_SELF_SCALING_FIGURES": str(figures)})
        if out.returncode != 0 or not figures.exists():
            tail = (out.stdout + out.stderr).strip().splitlines()[-3:]
            raise RuntimeError("the self-scaling test failed: " + " | ".join(tail))
        data: dict[str, object] = json.loads(figures.read_text(encoding="utf-8"))
        return data


def report() -> None:
    print("\n## Self-scaling on the machine rig (the monitor on the proxy machine alone)")
    reason = unavailable()
    if reason:
        print(f"skipped: {reason}")
        return
    figures = run()
    print(f"| {'what':<58} | figure |")
    print(f"|{'-' * 60}|--------|")
    for key, what in ROWS:
        print(f"| {what:<58} | {figures.get(key, '-')!s:>6} |")
    print(f"scale-out calls by action: {figures.get('aws_calls_scale_out_by_action')}")


if __name__ == "__main__":
    report()
