"""Helpers shared by tests and benchmarks: scratch repositories, free loopback ports."""

from __future__ import annotations

import mailbox
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cdpipe import PROJECT_ROOT


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def git(repo: Path, *args: str) -> str:
    out = subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                         text=True)
    return out.stdout.strip()


def make_scratch_repo(dest: Path) -> Path:
    """A copy of the project's committed tree as a new repository with one commit."""
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(PROJECT_ROOT), "archive", "HEAD"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    # Tests run on the working tree: deploy the code as it is now, not as last committed.
    for package in ("app", "cdpipe", "cdpipe_host", "monitoring"):
        shutil.rmtree(dest / package)
        shutil.copytree(PROJECT_ROOT / package, dest / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    git_init(dest)
    return dest


def git_init(repo: Path) -> None:
    env_args = ["-c", "user.name=cdpipe tests", "-c", "user.email=tests@cdpipe.invalid"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(repo), *env_args, "commit", "-qm", "scratch"],
                   check=True)


def commit_change(repo: Path, path: str, text: str, message: str) -> str:
    (repo / path).write_text(text, encoding="utf-8")
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=cdpipe tests", "-c", "user.email=tests@cdpipe.invalid",
        "commit", "-qm", message)
    return git(repo, "rev-parse", "HEAD")


def cdpipe_env(home: Path, port_base: int, repo: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(CDPIPE_HOME=str(home), CDPIPE_PORT_BASE=str(port_base))
    if repo is not None:
        env["CDPIPE_APP_REPO"] = str(repo)
    return env


def free_port_block(size: int = 100, start: int = 20000) -> int:
    """The first port p >= start, in steps of ``size``, with p .. p+size-1 all free."""
    from cdpipe.providers.local import port_in_use

    for base in range(start, 60000, size):
        if not any(port_in_use(p) for p in range(base, base + size)):
            return base
    raise RuntimeError("no free block of loopback ports")


def wait_until(check: Callable[[], bool], timeout: float, what: str = "condition",
               interval: float = 0.05) -> float:
    """Seconds until check() held; the test fails after timeout."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():
            return time.monotonic() - started
        time.sleep(interval)
    pytest.fail(f"{what}: not within {timeout}s")


def maildir_subjects(path: Path) -> list[str]:
    """Subjects of every message in a Maildir, unfolded, sorted."""
    return sorted(" ".join(str(m["Subject"]).split())
                  for m in mailbox.Maildir(str(path), create=False))
