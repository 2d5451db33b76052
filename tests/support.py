"""Helpers of the tests: waiting for a condition, reading a Maildir. What tests share
with the benchmarks (free ports, scratch repositories, a scratch cdpipe home's
environment) lives in ``devkit`` and is imported here, so ``from tests.support import
free_port`` keeps working."""

from __future__ import annotations

import contextlib
import mailbox
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from devkit import (
    cdpipe_env,
    commit_change,
    free_port,
    free_port_block,
    git,
    git_init,
    make_scratch_repo,
)

__all__ = ["cdpipe_env", "commit_change", "free_port", "free_port_block", "git", "git_init",
           "maildir_subjects", "make_scratch_repo", "wait_until"]


def wait_until(check: Callable[[], bool], timeout: float,
               what: str | Callable[[], str] = "condition", interval: float = 0.05) -> float:
    """Seconds until check() held, polled every ``interval``; after ``timeout`` the test
    fails saying what was awaited (``what``, or what it returns then: the last state)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():
            return time.monotonic() - started
        time.sleep(interval)
    if check():  # a last look: the deadline may have passed while check() ran
        return time.monotonic() - started
    pytest.fail(f"{what() if callable(what) else what}: not within {timeout}s")


def maildir_subjects(path: Path) -> list[str]:
    """Subjects of every message in a Maildir, unfolded, sorted."""
    return sorted(" ".join(str(m["Subject"]).split())
                  for m in mailbox.Maildir(str(path), create=False))


def kill_tree(root_pid: int) -> None:
    """kill -9 of a process and all its descendants at once (a gunicorn: master and
    workers), as a crash of the whole server would end them. At once matters: killed
    one by one, a gunicorn master outlives its worker long enough to fork a new one,
    which then holds the port, its app not loaded, while the restarted master waits to
    bind it (requests sent there waited out their timeouts). So the tree gets one
    signal: to its process group when the root leads one (the supervisor starts each
    program so), else each process is stopped before any is killed."""
    proc = psutil.Process(root_pid)
    procs = [proc, *proc.children(recursive=True)]
    if os.getpgid(root_pid) == root_pid:
        os.killpg(root_pid, signal.SIGKILL)
    else:
        for sig in (signal.SIGSTOP, signal.SIGKILL):
            for p in [proc, *proc.children(recursive=True)]:
                with contextlib.suppress(psutil.NoSuchProcess):
                    p.send_signal(sig)
    # Gone (reaped by supervisor) before the case goes on: what it does next happens
    # while the process is dead.
    psutil.wait_procs(procs, timeout=10)
