"""The fault suite's figures: runs ``tests/faults`` (its own local environment) with
``FAULTS_REPORT`` set, so that each case writes what it saw, and prints one row per case:
requests sent through the proxy during it, failed requests, seconds from the fault (a
kill, the last reload) or its end (Redis resumed or writable again, SMTP back) to the
environment converging again, and the case's verdict (passed, failed, or xfailed:
expected to fail, with the reason in the test).

Run alone: ``.venv/bin/python -m bench.fault_table``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The hostile-input cases count bad inputs, not requests under a fault: not in this table.
SKIP = ("test_hostile_input.py",)


def run() -> tuple[list[dict[str, object]], float]:
    """(one row per case, the suite's wall time in seconds)."""
    with tempfile.TemporaryDirectory(prefix="cdpipe-faults-") as tmp:
        report = Path(tmp) / "faults.jsonl"
        files = sorted(str(p) for p in (ROOT / "tests" / "faults").glob("test_*.py")
                       if p.name not in SKIP)
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        *files], cwd=ROOT, check=False,
                       env={**os.environ, "FAULTS_REPORT": str(report)},
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        took = time.perf_counter() - started
        rows = [json.loads(line) for line in report.read_text().splitlines()] \
            if report.exists() else []
        return rows, took


def report() -> None:
    rows, took = run()
    print(f"\n## Fault suite (tests/faults, one environment, steady load of 2 clients "
          f"through the proxy; {took / 60:.1f} min)")
    print("| case | requests | failed | converged after (s) | verdict |")
    print("|---|---|---|---|---|")
    for row in rows:
        statuses: dict[str, int] = row.get("failed_by_status") or {}  # type: ignore[assignment]
        by = (" (" + ", ".join(f"{'no answer' if k == '0' else k}: {v}"
                               for k, v in statuses.items()) + ")") if statuses else ""
        print(f"| {row['case']} | {row['sent']} | {row['failed']}{by} "
              f"| {row['converge_seconds']:.1f} | {row['verdict']} |")


if __name__ == "__main__":
    report()
