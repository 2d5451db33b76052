"""A local sandbox's own process supervisor: one supervisord per instance.

The supervisord daemonizes, so the processes it runs outlive the command that started
them, and restarts any of them that dies. Ansible adds programs through its include
directory (``supervisor.d/``), exactly as it would on a machine with supervisor.

Its socket lives in the sandbox's runtime directory (``run_dir``, under the
environment's short runtime directory: see ``cdpipe.socket_dir``), not in the sandbox
directory, whose path may be too long for a UNIX socket. With a control
group (``cdpipe.providers.local.sizing``) the supervisord starts in it, so every
program of the sandbox is limited to the instance's size.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from cdpipe import socket_dir
from cdpipe.errors import CdpipeError
from cdpipe.providers.local.sizing import SandboxGroup

CONF = """\
; written by cdpipe's local provider: the "machine" of instance {id}
[unix_http_server]
file={run}/supervisor.sock
chmod=0700

[supervisord]
logfile={dir}/logs/supervisord.log
logfile_maxbytes=5MB
logfile_backups=2
pidfile={dir}/supervisord.pid
childlogdir={dir}/logs
directory={dir}
identifier=cdpipe-{id}

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{run}/supervisor.sock

[include]
files = {dir}/supervisor.d/*.conf
"""


def bin_path(name: str) -> str:
    return str(Path(sys.executable).parent / name)


class Sandbox:
    def __init__(self, instance_id: str, directory: Path, run_dir: Path,
                 group: SandboxGroup | None = None) -> None:
        self.id = instance_id
        self.dir = directory
        self.run_dir = run_dir
        self.group = group

    @property
    def socket(self) -> Path:
        return self.run_dir / "supervisor.sock"

    @property
    def conf(self) -> Path:
        return self.dir / "supervisord.conf"

    def create(self) -> None:
        for sub in ("logs", "supervisor.d"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o700)
        self.ensure_run_dir()
        self.conf.write_text(CONF.format(id=self.id, dir=self.dir, run=self.run_dir),
                             encoding="utf-8")

    def ensure_run_dir(self) -> None:
        """The sandbox's runtime directory (0700): made again after a reboot emptied the
        system's temporary directory."""
        socket_dir.ensure(self.run_dir.parent)
        self.run_dir.mkdir(mode=0o700, exist_ok=True)

    def pid(self) -> int | None:
        try:
            pid = int((self.dir / "supervisord.pid").read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            proc = psutil.Process(pid)
            if proc.status() == psutil.STATUS_ZOMBIE or "supervisord" not in " ".join(
                proc.cmdline()
            ):
                return None
        except psutil.Error:
            return None
        return pid

    def start(self) -> None:
        if self.pid() is not None:
            return
        self.ensure_run_dir()
        if self.group is not None:
            self.group.prepare()
        out = subprocess.run(
            [bin_path("supervisord"), "-c", str(self.conf)],
            capture_output=True, text=True, check=False,
            # In the child before exec: supervisord and all it starts are in the group.
            preexec_fn=self.group.join if self.group is not None else None,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.pid() is not None and self.socket.exists():
                return
            time.sleep(0.05)
        why = out.stderr.strip() or out.stdout.strip() or "no output"
        raise CdpipeError(
            f"the supervisor of {self.id} did not start ({why}); "
            f"see {self.dir}/logs/supervisord.log"
        )

    def stop(self, timeout: float = 30) -> None:
        """Stop the supervisor and everything it runs, then anything left in the sandbox."""
        pid = self.pid()
        if pid is not None:
            try:
                os.kill(pid, signal.SIGTERM)
                psutil.Process(pid).wait(timeout)
            except (ProcessLookupError, psutil.NoSuchProcess):
                pass
            except psutil.TimeoutExpired:
                os.kill(pid, signal.SIGKILL)
        self.kill_leftovers()
        shutil.rmtree(self.run_dir, ignore_errors=True)
        socket_dir.remove_if_empty(self.run_dir.parent)
        if self.group is not None:
            self.group.remove()

    def processes(self) -> list[psutil.Process]:
        """Processes that belong to this sandbox: started in it or naming it."""
        mine = []
        marker = str(self.dir)
        for proc in psutil.process_iter(["pid", "cmdline", "cwd"]):
            if proc.pid == os.getpid():
                continue
            cmd = " ".join(proc.info["cmdline"] or [])
            cwd = proc.info["cwd"] or ""
            if marker + "/" in cmd + "/" or cwd == marker or cwd.startswith(marker + "/"):
                mine.append(proc)
        return mine

    def kill_leftovers(self) -> None:
        procs = self.processes()
        if self.group is not None:  # and whatever else its control group holds
            known = {p.pid for p in procs}
            for pid in self.group.group.pids() - known - {os.getpid()}:
                with contextlib.suppress(psutil.Error):
                    procs.append(psutil.Process(pid))
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                proc.terminate()
        _, alive = psutil.wait_procs(procs, timeout=5)
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                proc.kill()
