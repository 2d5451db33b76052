"""The vars files generated from cdpipe's model (cdpipe.ansible_values): current on
disk, loaded by Ansible as the roles' and the AWS inventory's defaults, and the one
place their values are written outside Python."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cdpipe import PROJECT_ROOT, ansible_values
from cdpipe.model import CODE_DIR
from cdpipe.redis_users import ACL, USERS
from cdpipe_host.values import DEFAULT_CANARY_WEIGHT
from devkit.roles import role_defaults


def test_every_generated_file_is_current() -> None:
    stale = [str(path.relative_to(PROJECT_ROOT)) for path in ansible_values.stale()]
    assert stale == [], f"out of date: {stale}; run `{ansible_values.COMMAND}`"


def test_a_changed_model_value_makes_its_file_stale(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check above can fail: a canary weight changed in the model (and nowhere
    else) leaves the proxy role's and the group_vars' files out of date."""
    monkeypatch.setattr(ansible_values, "DEFAULT_CANARY_WEIGHT", 40)
    stale = {str(path.relative_to(PROJECT_ROOT)) for path in ansible_values.stale()}
    assert stale == {"roles/proxy/defaults/main/model.yml",
                     "inventory/group_vars/all/model.yml"}


def test_no_generated_value_is_also_typed_in_a_roles_own_defaults() -> None:
    for role, values in ansible_values.role_values().items():
        typed = yaml.safe_load((PROJECT_ROOT / "roles" / role / "defaults" / "main" /
                                "main.yml").read_text(encoding="utf-8")) or {}
        assert not {v.name for v in values} & set(typed), role
    group = yaml.safe_load((ansible_values.GROUP_VARS.parent / "main.yml").read_text())
    assert not {v.name for v in ansible_values.group_values()} & set(group)


def test_the_acl_covers_every_user_once() -> None:
    assert list(ACL) == list(USERS)
    assert [u["name"] for u in role_defaults("redis")["redis_acl_users"]] == list(USERS)


def test_ansible_loads_the_generated_defaults(tmp_path: Path) -> None:
    """A role's defaults directory as Ansible reads it: the typed main.yml and the
    generated model.yml both (a play of the proxy role's defaults, shown by debug)."""
    play = tmp_path / "show.yml"
    play.write_text(
        "- hosts: localhost\n  gather_facts: false\n  roles: [{role: proxy, tags: never}]\n"
        "  tasks:\n    - ansible.builtin.debug:\n"
        "        msg: \"{{ proxy_canary_weight }} {{ proxy_health_path }} "
        "{{ proxy_code_dir }}\"\n")
    out = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"),
                          str(play), "-e", "cdpipe_instance_dir=/x"],
                         capture_output=True, text=True, timeout=120, check=False,
                         cwd=PROJECT_ROOT)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert f'"msg": "{DEFAULT_CANARY_WEIGHT} /healthz {CODE_DIR}"' in out.stdout
