"""Helpers of the tests alone: waiting for a condition, reading a Maildir, stopping a
process tree, and the fixtures of the integration files that share one ACL'd
redis-server per module. What tests share with the benchmarks (free ports, scratch
repositories, a scratch cdpipe home's environment, servers) is in ``devkit``, imported
from there."""

from __future__ import annotations

import contextlib
import mailbox
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from cdpipe.model import Instance
from cdpipe.redis_users import password_name
from cdpipe.state import State, save
from devkit.acl_redis import AclRedis, acl_redis


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


# One ACL'd redis-server per module (the redis role's users and rules), for the
# integration files that import ``server`` and ``clean``: every test there starts from
# an empty Redis. Not in a conftest: the autouse flush must reach only those modules.
@pytest.fixture(scope="module")
def server() -> Iterator[AclRedis]:
    with acl_redis() as running:
        yield running


@pytest.fixture(autouse=True)
def clean(server: AclRedis) -> None:
    server.client("admin").flushall()


def home_on(server: AclRedis, home: Path) -> None:
    """A CDPIPE_HOME whose environment is this Redis alone: every user's password in
    its secrets directory, a state with one redis instance on the server's port."""
    secrets_dir = home / "secrets"
    secrets_dir.mkdir(parents=True)
    for user, password in server.passwords.items():
        (secrets_dir / password_name(user)).write_text(password + "\n")
    save(home / "state.json", State(instances=[Instance(
        id="redis-1", role="redis", host="127.0.0.1", ports={"redis": server.port},
        provider="local")]))
