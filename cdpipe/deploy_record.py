"""The deploy history: every deploy that runs is recorded, done or failed, at the head
of ``deploy:history`` in the environment's Redis as the deployer user (JSON of
``monitoring.records.DeployRecord``)."""

from __future__ import annotations

import getpass
import os
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager

import redis

from cdpipe.errors import CdpipeError
from cdpipe_host import history
from cdpipe_host.keys import DEPLOY_HISTORY
from cdpipe_host.names import one_line
from monitoring.records import DeployRecord


def deployed_by() -> str:
    """``user@host`` of this process, as the deploy history names who deployed."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no login name, no passwd entry (a container)
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


@contextmanager
def recorded(client: Callable[[], redis.Redis], show: Callable[[str], None], command: str,
             ref: str, sha: str, roles: Sequence[str], **extra: str) -> Iterator[None]:
    """Records the deploy the block runs, done or failed (its exception goes up
    unchanged). When Redis does not take the record, one line says so and nothing
    else changes."""
    started = time.time()
    try:
        yield
    except BaseException as exc:
        error = one_line(str(exc), 400) or type(exc).__name__
        _record(client, show, command, ref, sha, roles, started, error, extra)
        raise
    _record(client, show, command, ref, sha, roles, started, None, extra)


def _record(client: Callable[[], redis.Redis], show: Callable[[str], None], command: str,
            ref: str, sha: str, roles: Sequence[str], started: float, error: str | None,
            extra: Mapping[str, str]) -> None:
    entry = DeployRecord(at=started, finished=time.time(), commit=sha, ref=ref,
                         target=",".join(roles), command=command,
                         result="ok" if error is None else "failed", error=error or "",
                         by=deployed_by(), **extra)
    try:
        history.record(client(), DEPLOY_HISTORY, entry.dumps())
    except (CdpipeError, redis.RedisError) as exc:
        show(f"the {command} of {sha[:12]} was not recorded in {DEPLOY_HISTORY}: "
             f"{one_line(str(exc), 300)}")
