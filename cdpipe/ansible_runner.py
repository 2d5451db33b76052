"""Runs ansible-playbook, shows each task per host as it runs, keeps the full log.

The full output goes to ``<home>/logs/<time>-<playbook>.log``; the terminal gets one
line per task result. A failure becomes one ``CdpipeError`` line naming the host, the
task and Ansible's message, with the log's path.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cdpipe import PROJECT_ROOT
from cdpipe.errors import CdpipeError

TASK_RE = re.compile(r"^(?:TASK|RUNNING HANDLER) \[(?P<name>.*)\] \**$")
RESULT_RE = re.compile(
    r"^(?P<status>ok|changed|skipping|fatal|failed|unreachable|rescued): "
    r"\[(?P<host>[^\]]+)\](?: \(item=[^)]*\))?(?:(?:: [A-Z!]+)? => (?P<detail>.*))?"
)
RECAP_RE = re.compile(
    r"^(?P<host>\S+)\s+: ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+"
    r"unreachable=(?P<unreachable>\d+)\s+failed=(?P<failed>\d+)"
)


@dataclass
class PlaybookResult:
    recap: dict[str, dict[str, int]] = field(default_factory=dict)
    log_path: Path | None = None
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # host, task, msg
    seconds: float = 0.0

    @property
    def changed(self) -> int:
        return sum(r["changed"] for r in self.recap.values())


def _message(detail: str | None) -> str:
    if not detail:
        return "no detail"
    try:
        data = json.loads(detail)
    except json.JSONDecodeError:
        return detail.strip()[:300]
    msg = str(data.get("msg") or "")
    output = data.get("stderr") or data.get("module_stderr") or data.get("stdout") or ""
    # A file a `validate:` command refused: the checker's own words say why (HAProxy's
    # version banner, its NOTICE lines, would only use up the line).
    output = "\n".join(line for line in str(output).splitlines()
                       if not line.startswith("[NOTICE]"))
    if output and (not msg or msg in ("non-zero return code", "failed to validate")
                   or "MODULE FAILURE" in msg):
        msg = f"{msg}: {output}" if msg else str(output)
    return " ".join((msg or detail).split())[:400]


class OutputParser:
    """Turns the default callback's lines into progress lines and a result."""

    def __init__(self, show: Callable[[str], None]) -> None:
        self.show = show
        self.task = ""
        self.result = PlaybookResult()
        self._shown: set[tuple[str, str]] = set()

    def feed(self, line: str) -> None:
        line = line.rstrip("\n")
        if m := TASK_RE.match(line):
            self.task = m["name"]
            return
        if line.startswith("...ignoring"):
            if self.result.failures:
                self.result.failures.pop()
            return
        if m := RESULT_RE.match(line):
            status, host = m["status"], m["host"]
            if status in ("fatal", "failed", "unreachable"):
                self.result.failures.append((host, self.task, _message(m["detail"])))
            # Loops report once per item: show a host's first line for each task only.
            if status != "skipping" and (host, self.task) not in self._shown:
                self._shown.add((host, self.task))
                self.show(f"  {host:<12} {status:<9} {self.task}")
            return
        if m := RECAP_RE.match(line):
            self.result.recap[m["host"]] = {
                k: int(m[k]) for k in ("ok", "changed", "unreachable", "failed")
            }


def ansible_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        ANSIBLE_CONFIG=str(PROJECT_ROOT / "ansible.cfg"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_STDOUT_CALLBACK="default",
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
    parser = OutputParser(show)
    started = time.monotonic()
    descriptor = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)  # a log of the same second, made before, too
    with open(descriptor, "w", encoding="utf-8") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env=ansible_env(), cwd=PROJECT_ROOT,
        )
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                log.write(line)
                log.flush()
                parser.feed(line)
            code = proc.wait()
        except BaseException:  # Ctrl-C, SIGTERM: the playbook stops with cdpipe
            stop(proc)
            raise
    result = parser.result
    result.log_path = log_path
    result.seconds = time.monotonic() - started
    if code != 0:
        if result.failures:
            host, task, msg = result.failures[-1]
            raise CdpipeError(f"{playbook} failed on {host} at '{task}': {msg} (log: {log_path})")
        raise CdpipeError(f"{playbook} exited with {code}; see {log_path}")
    return result
