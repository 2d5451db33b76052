"""Ansible's logs on the control machine are the user's alone: the folder 0700 and each
log 0600, whatever the umask (a failed task's output may hold a template's values)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from cdpipe.ansible_runner import run_playbook
from cdpipe.errors import CdpipeError


def test_the_log_folder_and_its_logs_are_private(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir(mode=0o755)
    old = os.umask(0o022)
    try:
        with pytest.raises(CdpipeError):  # no such playbook: ansible-playbook fails at once
            run_playbook("no-such-playbook.yml", tmp_path / "inventory.yml", logs,
                         show=lambda _line: None)
    finally:
        os.umask(old)
    assert stat.S_IMODE(logs.stat().st_mode) == 0o700
    made = list(logs.iterdir())
    assert len(made) == 1 and made[0].read_text().startswith("$ ")
    assert stat.S_IMODE(made[0].stat().st_mode) == 0o600
