"""Helpers of the tests: waiting for a condition, reading a Maildir. What tests share
with the benchmarks (free ports, scratch repositories, a scratch cdpipe home's
environment) lives in ``devkit`` and is imported here, so ``from tests.support import
free_port`` keeps working."""

from __future__ import annotations

import mailbox
import time
from collections.abc import Callable
from pathlib import Path

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
