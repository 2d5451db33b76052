"""Runs ansible-playbook, shows each task per host as it runs, keeps the full log.

The full output goes to ``<home>/logs/<time>-<playbook>.log``; the terminal gets one
line per task result. A failure becomes one ``CdpipeError`` line naming the host, the
task and Ansible's message, with the log's path. What cdpipe reads of a run (tasks,
results, failures, the recap) comes from Ansible's own structured results, as JSON
lines from the project's callback plugin (``callback_plugins/cdpipe_events.py``), never
from the human output, whose text a loop item or an ansible-core upgrade can change.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cdpipe import PROJECT_ROOT
from cdpipe.errors import CdpipeError

EVENTS_PLUGIN = "cdpipe_events"  # callback_plugins/cdpipe_events.py
LOOP_FAILED = "One or more items failed"


@dataclass
class PlaybookResult:
    recap: dict[str, dict[str, int]] = field(default_factory=dict)
    log_path: Path | None = None
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # host, task, msg
    seconds: float = 0.0

    @property
    def changed(self) -> int:
        return sum(r["changed"] for r in self.recap.values())


def _message(data: dict[str, Any]) -> str:
    """One line of a failed result: its message, with the command's or the module's own
    words where the message alone says nothing."""
    msg = str(data.get("msg") or "")
    output = data.get("stderr") or data.get("module_stderr") or data.get("stdout") or ""
    # A file a `validate:` command refused: the checker's own words say why (HAProxy's
    # version banner, its NOTICE lines, would only use up the line).
    output = "\n".join(line for line in str(output).splitlines()
                       if not line.startswith("[NOTICE]"))
    if output and (not msg or msg in ("non-zero return code", "failed to validate")
                   or "MODULE FAILURE" in msg):
        msg = f"{msg}: {output}" if msg else str(output)
    return " ".join(msg.split())[:400] or "no detail"


class EventParser:
    """Turns the events of callback_plugins/cdpipe_events.py (JSON lines) into progress
    lines and a result."""

    def __init__(self, show: Callable[[str], None]) -> None:
        self.show = show
        self.task = ""
        self.result = PlaybookResult()
        self._shown: set[tuple[str, str]] = set()
        self._item_failures: dict[tuple[str, str], str] = {}

    def feed(self, line: str) -> None:
        try:
            event = json.loads(line)
        except ValueError:
            return  # a line cut short: the next read completes it
        kind = event.get("event")
        if kind == "task":
            self.task = str(event.get("task", ""))
        elif kind == "result":
            self._result(event)
        elif kind == "recap":
            self.result.recap = {
                str(host): {"ok": int(c["ok"]), "changed": int(c["changed"]),
                            "unreachable": int(c["unreachable"]), "failed": int(c["failures"])}
                for host, c in event.get("hosts", {}).items()}

    def _result(self, event: dict[str, Any]) -> None:
        status, host = str(event.get("status")), str(event.get("host"))
        task = str(event.get("task") or self.task)
        message = _message(event.get("result") or {})
        if status == "item_failed" and not event.get("ignored"):
            self._item_failures[(host, task)] = message
            return
        if status in ("failed", "unreachable") and not event.get("ignored"):
            if message == LOOP_FAILED:  # the item that failed says why
                message = self._item_failures.get((host, task), message)
            self.result.failures.append((host, task, message))
        # Loops report once per item: show a host's first line for each task only.
        if (host, task) not in self._shown:
            self._shown.add((host, task))
            self.show(f"  {host:<12} {status:<9} {task}")


def ansible_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        ANSIBLE_CONFIG=str(PROJECT_ROOT / "ansible.cfg"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_STDOUT_CALLBACK="default",
        # cdpipe reads the results as events (EVENTS_PLUGIN), besides the callbacks
        # the user enabled.
        ANSIBLE_CALLBACKS_ENABLED=",".join(
            [c for c in os.environ.get("ANSIBLE_CALLBACKS_ENABLED", "").split(",")
             if c.strip()] + [EVENTS_PLUGIN]),
        PYTHONUNBUFFERED="1",
    )
    env.pop("ANSIBLE_LOG_PATH", None)
    if extra:
        env.update(extra)
    return env


def stop(proc: subprocess.Popen[str], grace: float = 30.0) -> None:
    """Asks ansible-playbook to stop (SIGTERM), then kills it after ``grace`` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _feed(parser: EventParser, text: str) -> str:
    """Feeds the whole lines of ``text``; returns the incomplete last one."""
    *lines, rest = text.split("\n")
    for line in lines:
        if line.strip():
            parser.feed(line)
    return rest


def run_playbook(
    playbook: str,
    inventory: Path,
    logs_dir: Path,
    extra_vars: Mapping[str, str | bool] | None = None,
    limit: str | None = None,
    show: Callable[[str], None] = print,
) -> PlaybookResult:
    binary = Path(sys.executable).parent / "ansible-playbook"
    cmd = [str(binary), "-i", str(inventory), str(PROJECT_ROOT / "playbooks" / playbook)]
    if extra_vars:
        cmd += ["-e", json.dumps(extra_vars)]
    if limit:
        cmd += ["--limit", limit]
    # Ansible's output may hold what a failed task printed (a template's values): the
    # logs are the user's alone, whatever the umask.
    logs_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    logs_dir.chmod(0o700)
    log_path = logs_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-{Path(playbook).stem}.log"
    parser = EventParser(show)
    started = time.monotonic()
    descriptor = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)  # a log of the same second, made before, too
    events_fd, events_path = tempfile.mkstemp(prefix=f".{log_path.stem}-", suffix=".jsonl",
                                              dir=logs_dir)
    env = ansible_env({"CDPIPE_ANSIBLE_EVENTS": events_path})
    try:
        with open(descriptor, "w", encoding="utf-8") as log, \
                open(events_fd, encoding="utf-8") as events:
            log.write("$ " + " ".join(cmd) + "\n")
            proc = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                env=env, cwd=PROJECT_ROOT,
            )
            assert proc.stdout is not None
            pending = ""
            try:
                for line in proc.stdout:  # the human output, for the log
                    log.write(line)
                    log.flush()
                    pending = _feed(parser, pending + events.read())
                code = proc.wait()
                _feed(parser, pending + events.read() + "\n")
            except BaseException:  # Ctrl-C, SIGTERM: the playbook stops with cdpipe
                stop(proc)
                raise
    finally:
        os.unlink(events_path)
    result = parser.result
    result.log_path = log_path
    result.seconds = time.monotonic() - started
    if code != 0:
        if result.failures:
            host, task, msg = result.failures[-1]
            raise CdpipeError(f"{playbook} failed on {host} at '{task}': {msg} (log: {log_path})")
        raise CdpipeError(f"{playbook} exited with {code}; see {log_path}")
    return result
