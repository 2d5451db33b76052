"""cdpipe stopped with SIGTERM (what the monitor's bound on a scale command sends, and
sudo relays) ends like Ctrl-C: its ansible-playbook is stopped with it, instead of
running on, unlocked, after cdpipe is gone."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import psutil
import yaml

from tests.support import wait_until

MARK = "97.25"  # the sleep's argument: a process no other test starts

RUNNER = """\
import sys
from pathlib import Path
from cdpipe.ansible_runner import run_playbook
from cdpipe.cli_support import stop_on_sigterm
stop_on_sigterm()
try:
    run_playbook(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), show=lambda line: None)
except KeyboardInterrupt:
    sys.exit(130)
"""


def marked() -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if MARK in cmdline or any(MARK in part for part in cmdline[1:2]):
            found.append(proc)
    return found


def test_sigterm_stops_the_playbook_with_cdpipe(tmp_path: Path) -> None:
    playbook = tmp_path / "slow.yml"
    playbook.write_text(yaml.safe_dump([{
        "hosts": "localhost", "gather_facts": False,
        "tasks": [{"name": "Sleep", "ansible.builtin.command": {"argv": ["sleep", MARK]},
                   "changed_when": False}]}]))
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {"localhost": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable}}}}))
    runner = subprocess.Popen([sys.executable, "-c", RUNNER, str(playbook), str(inventory),
                               str(tmp_path / "logs")])
    try:
        wait_until(lambda: any(p.info["cmdline"][:1] == ["sleep"] for p in marked()), 60,
                   "the playbook's sleep running")
        playbooks = [p for p in psutil.Process(runner.pid).children(recursive=True)
                     if "ansible-playbook" in " ".join(p.cmdline())]
        assert playbooks, "ansible-playbook runs under the runner"
        runner.send_signal(signal.SIGTERM)
        assert runner.wait(timeout=60) == 130
        _gone, alive = psutil.wait_procs(playbooks, timeout=30)
        assert alive == [], alive
    finally:
        for proc in marked():
            proc.kill()
        if runner.poll() is None:
            runner.kill()
