"""Promote and rollback from the page: the CLI's own commands (``cdpipe canary promote``
/ ``rollback``) run as a child process with the dashboard's environment, one at a time,
their output kept for the page. The environment lock and the deploy history are the
CLI's, so a click and a typed command are the same act."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from cdpipe_host.names import one_line

COMMANDS = {"promote": ("canary", "promote"), "rollback": ("canary", "rollback")}
KEPT_LINES = 30


class Busy(Exception):
    """Another job is running."""


class Jobs:
    # The CLI as this process runs it; a dashboard without rights of its own runs its
    # actor instead (cdpipe.dashboard.actor), with the same arguments.
    PROGRAM = (sys.executable, "-m", "cdpipe.cli")

    def __init__(self, publish: Callable[[dict[str, Any]], object],
                 program: tuple[str, ...] = PROGRAM) -> None:
        self.publish = publish
        self.program = program
        self.current: dict[str, Any] | None = None
        self.task: asyncio.Task[None] | None = None

    def view(self) -> dict[str, Any] | None:
        return self.current

    def start(self, name: str) -> dict[str, Any]:
        """Starts job ``name`` (promote or rollback); Busy while one runs."""
        if self.task is not None and not self.task.done():
            assert self.current is not None
            raise Busy(f"{self.current['command']} is still running (since "
                       f"{time.strftime('%H:%M:%S', time.localtime(self.current['started']))})")
        args = COMMANDS[name]
        lines: deque[str] = deque(maxlen=KEPT_LINES)
        self.current = {"name": name, "command": "cdpipe " + " ".join(args),
                        "state": "running", "started": time.time(), "finished": None,
                        "exit": None, "lines": []}
        self.task = asyncio.get_running_loop().create_task(self._run(args, lines))
        self.publish(self.current)
        return self.current

    async def _run(self, args: tuple[str, ...], lines: deque[str]) -> None:
        assert self.current is not None
        job = self.current
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.program, *args, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                env=os.environ | {"NO_COLOR": "1", "TERM": "dumb"})
            assert proc.stdout is not None
            while raw := await proc.stdout.readline():
                lines.append(one_line(raw.decode(errors="replace").rstrip(), 400))
                job["lines"] = list(lines)
                self.publish(job)
            code = await proc.wait()
        except OSError as exc:
            lines.append(f"could not start {job['command']}: {exc}")
            code = None
        job |= {"lines": list(lines), "exit": code, "finished": time.time(),
                "state": "ok" if code == 0 else "failed"}
        self.publish(job)

    async def close(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
