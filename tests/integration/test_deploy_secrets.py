"""Which secrets a deploy reads (secret_files.DEPLOY): deploy.yml and scale.yml run only the
app role, whose configuration is rendered here by real Ansible (ansible-core templates
lazily: a lookup runs only when its value is used) from cdpipe's own AWS inventory with
a secrets directory that holds those files and nothing else, as on the proxy machine."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cdpipe import PROJECT_ROOT, secret_files
from cdpipe.config import Settings
from cdpipe.inventory import build
from cdpipe.model import ROLES, Instance, machine_ports
from cdpipe.providers.aws.provider import Ec2Provider
from cdpipe.state import State
from devkit.roles import default_files

PLAY = """
- name: Render the app's configuration as deploy.yml does.
  hosts: prod:canary
  gather_facts: false
  vars_files: {defaults}
  tasks:
    - name: Show the app's environment.
      ansible.builtin.debug:
        msg: "APP_ENV={{{{ app_environment | to_json }}}}"
"""


def render(tmp_path: Path, files: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
    home = tmp_path / "home"
    settings = Settings(home=home, app_repo="https://git.example.com/you/cdpipe.git",
                        aws_region="us-east-1")
    state = State(provider="aws", deployed={"prod": "a" * 40, "canary": "a" * 40},
                  instances=[Instance(id=f"i-{role}", role=role, host="127.0.0.1",
                                      ports=machine_ports(role), provider="aws")
                             for role in ROLES])
    inventory = home / "inventory.yml"
    home.mkdir(parents=True, exist_ok=True)
    inventory.write_text(yaml.safe_dump(build(settings, state, Ec2Provider(settings))))
    (home / "secrets").mkdir(exist_ok=True)
    for name in files:
        (home / "secrets" / name).write_text(f"value-of-{name}\n")
    play = tmp_path / "render.yml"
    play.write_text(PLAY.format(defaults=[str(p) for p in default_files("app")]))
    return subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory),
         str(play), "-e", "ansible_connection=local", "-e", "ansible_become=false"],
        capture_output=True, text=True, timeout=120, check=False, cwd=PROJECT_ROOT)


def test_a_deploy_renders_with_only_its_secrets(tmp_path: Path) -> None:
    out = render(tmp_path, secret_files.DEPLOY)
    assert out.returncode == 0, out.stdout[-2000:]
    shown = [line for line in out.stdout.splitlines() if "APP_ENV=" in line]
    assert len(shown) == 2  # prod and canary
    env = json.loads(json.loads("{" + shown[0].strip().rstrip(",") + "}")["msg"]
                     .removeprefix("APP_ENV="))
    assert env["APP_REDIS_URL"] == "redis://app:value-of-redis_app_password@127.0.0.1:6379/0"
    assert env["APP_USER_ID_SECRET"] == "value-of-app_user_id_secret"


@pytest.mark.parametrize("left_out", secret_files.DEPLOY)
def test_each_of_them_is_needed(tmp_path: Path, left_out: str) -> None:
    out = render(tmp_path, tuple(n for n in secret_files.DEPLOY if n != left_out))
    assert out.returncode != 0 and left_out in out.stdout
