"""cdpipe's playbook runner against ansible-playbook for real (localhost): what it shows
and reports comes from Ansible's structured results (callback_plugins/cdpipe_events.py),
so a loop item whose text holds ")" still gives the failure's own message, an ignored
failure is no failure, and the recap is Ansible's."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from cdpipe.ansible_runner import run_playbook
from cdpipe.errors import CdpipeError


def write(tmp_path: Path, tasks: list[dict[str, Any]]) -> tuple[Path, Path]:
    playbook = tmp_path / "play.yml"
    playbook.write_text(yaml.safe_dump([{"hosts": "localhost", "gather_facts": False,
                                         "tasks": tasks}]))
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {"localhost": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable}}}}))
    return playbook, inventory


def test_a_failing_loop_item_with_a_parenthesis_keeps_its_message(tmp_path: Path) -> None:
    """The default callback's line for it reads `failed: [localhost] (item=a) b) => {...}`:
    a pattern over that text lost the message; the structured result keeps it."""
    playbook, inventory = write(tmp_path, [{
        "name": "Check each entry",
        "ansible.builtin.command": {"argv": [
            "sh", "-c", "[ \"$1\" = ok ] || { echo \"entry $1 is bad\" >&2; exit 3; }",
            "sh", "{{ item }}"]},
        "loop": ["ok", "a) b"], "changed_when": False}])
    lines: list[str] = []
    with pytest.raises(CdpipeError) as failed:
        run_playbook(str(playbook), inventory, tmp_path / "logs", show=lines.append)
    message = str(failed.value)
    assert message.startswith(f"{playbook} failed on localhost at 'Check each entry': "), message
    assert "entry a) b is bad" in message and "(log: " in message
    assert lines == ["  localhost    failed    Check each entry"]


def test_an_ignored_failure_is_none_and_the_recap_is_ansibles(tmp_path: Path) -> None:
    playbook, inventory = write(tmp_path, [
        {"name": "Fail, ignored", "ansible.builtin.command": {"argv": ["false"]},
         "ignore_errors": True},
        {"name": "Change something", "ansible.builtin.command": {"argv": ["true"]}},
        {"name": "Change nothing", "ansible.builtin.command": {"argv": ["true"]},
         "changed_when": False}])
    lines: list[str] = []
    result = run_playbook(str(playbook), inventory, tmp_path / "logs", show=lines.append)
    assert result.failures == []
    # (Ansible counts the ignored command as run and changed, and not as failed.)
    assert result.recap == {"localhost": {"ok": 3, "changed": 2, "unreachable": 0,
                                          "failed": 0}}
    assert result.changed == 2
    assert [line.split(None, 2)[1:] for line in lines] == [
        ["failed", "Fail, ignored"], ["changed", "Change something"],
        ["ok", "Change nothing"]]
    assert sorted(p.suffix for p in (tmp_path / "logs").iterdir()) == [".log"]  # events gone
