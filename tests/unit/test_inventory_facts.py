"""The cross-host facts have one home (the Python model: cdpipe.model, cdpipe_host):
cdpipe's inventory sets them at run time, and the AWS plugin inventory's group_vars
(generated from the same model by cdpipe.ansible_values, with the CDPIPE_* lookups
typed beside them) give the laptop commands the same values."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml

from cdpipe import PROJECT_ROOT
from cdpipe.config import Settings
from cdpipe.controls import format_redis_url
from cdpipe.inventory import REDIS_URLS, common_vars
from cdpipe.model import DASHBOARD_PORT, machine_ports
from cdpipe.providers.aws.provider import Ec2Provider
from cdpipe.redis_users import USERS
from cdpipe.state import State
from devkit.roles import role_defaults


def test_the_scalers_dashboard_port_is_the_clis_default(tmp_path: Path) -> None:
    assert role_defaults("scaler")["scaler_dashboard_port"] == DASHBOARD_PORT
    assert Ec2Provider(Settings(home=tmp_path)).inventory_vars()["scaler_dashboard_port"] \
        == DASHBOARD_PORT


def test_aws_group_vars_agree_with_the_generated_inventory(tmp_path: Path) -> None:
    group_vars: dict[str, Any] = {}
    for path in sorted((PROJECT_ROOT / "inventory" / "group_vars" / "all").glob("*.yml")):
        group_vars |= yaml.safe_load(path.read_text(encoding="utf-8"))
    settings = Settings(home=tmp_path)
    provider = Ec2Provider(settings)
    generated = common_vars(settings, State(), provider) | provider.inventory_vars()
    generated["cdpipe_redis_port"] = machine_ports("redis")["redis"]
    for key in ("cdpipe_redis_passwords", "cdpipe_redis_urls", "cdpipe_code_dir",
                "cdpipe_python", "cdpipe_instance_dir", "proxy_dir", "proxy_backend",
                "proxy_controller_config", "proxy_deployer_config", "proxy_canary_weight",
                "cdpipe_redis_port",
                "app_keep_releases", "cdpipe_install_packages", "cdpipe_provider",
                "monitor_scale_command"):
        assert group_vars[key] == generated[key], key


@pytest.mark.parametrize("user", USERS)
@pytest.mark.parametrize("password", ["plain-Token_1", "p@ss:w/rd%20 +"])
def test_the_inventory_urls_are_the_cli_urls(user: str, password: str) -> None:
    """Ansible renders the inventory's URLs with Jinja's urlencode; the CLI with
    urllib's quote: a password with @ : / % must come out the same in both."""
    env = jinja2.Environment()
    rendered = env.from_string(REDIS_URLS[user]).render(
        cdpipe_redis_passwords={user: password}, cdpipe_redis_host="10.0.0.5",
        cdpipe_redis_port=6379)
    assert rendered == format_redis_url("10.0.0.5", 6379, user, password)


@pytest.mark.parametrize(("role", "variable", "user"), [
    ("app", "app_redis_url", "app"), ("proxy", "proxy_redis_url", "controller"),
    ("proxy", "proxy_deployer_redis_url", "deployer"),
    ("monitor", "monitor_redis_url", "monitor")])
def test_each_role_connects_as_its_own_user(role: str, variable: str, user: str) -> None:
    assert role_defaults(role)[variable] == "{{ cdpipe_redis_urls['" + user + "'] }}"


def test_the_aws_inventory_reads_every_option_up_keeps() -> None:
    """`cdpipe up`'s options live as tags of the proxy (cdpipe:option:<name>): the
    laptop's inventory composes each back, so its converge changes nothing either."""
    import inspect

    from cdpipe import cli
    from cdpipe.providers.aws.tag_records import OPTION_TAG_PREFIX

    kept = set(re.findall(r'options\["(\w+)"\]', inspect.getsource(cli.up)))
    assert kept  # the options of `cdpipe up`, as it records them
    compose = yaml.safe_load(
        (PROJECT_ROOT / "inventory" / "aws_ec2.yml").read_text(encoding="utf-8"))["compose"]
    assert {name: compose.get(name) for name in kept} == {
        name: f"tags['{OPTION_TAG_PREFIX}{name}']" for name in kept}
