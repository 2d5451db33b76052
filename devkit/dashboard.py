"""A `cdpipe dashboard` process for tests and benchmarks, and Debian's Chromium driven
by Playwright (``make test`` installs both: the chromium package, the playwright wheel).

Chromium starts headless with its background networking off (this machine reaches no
outside address: without those flags it keeps trying), in a fresh profile."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync",
                  "--disable-default-apps", "--disable-extensions")


def chromium_path() -> str:
    """Debian's Chromium, or one line saying how to get it."""
    for name in ("chromium", "chromium-browser"):
        if found := shutil.which(name):
            return found
    raise RuntimeError("no chromium on PATH: `make test` installs Debian's package "
                       "(scripts/bootstrap: apt-get install chromium)")


def launch(playwright: Any) -> Any:
    """A headless Chromium browser through Playwright."""
    return playwright.chromium.launch(executable_path=chromium_path(),
                                      args=list(CHROMIUM_FLAGS), timeout=60_000)


@dataclass(frozen=True)
class Dashboard:
    url: str  # http://127.0.0.1:PORT/
    pid: int


@contextmanager
def dashboard_process(env: dict[str, str], port: int, log: Path,
                      timeout: float = 30.0) -> Iterator[Dashboard]:
    """`cdpipe dashboard --port PORT` with the environment ``env``; yields it once it
    listens, stops it at the end (SIGTERM, then SIGKILL after 10 s)."""
    cdpipe = str(Path(sys.executable).parent / "cdpipe")
    with log.open("w") as out:
        proc = subprocess.Popen([cdpipe, "dashboard", "--port", str(port)], env=env,
                                stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        url = None
        while url is None:
            text = log.read_text(errors="replace")
            for line in text.splitlines():
                if line.startswith("dashboard: "):
                    url = line.split()[1]
            if url is None and (proc.poll() is not None or time.monotonic() > deadline):
                raise RuntimeError(f"cdpipe dashboard did not start:\n{text}")
            if url is None:
                time.sleep(0.1)
        yield Dashboard(url, proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(10)


def rss_kib(pid: int) -> int:
    """Resident memory of a process, in KiB (from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")
