"""Mail settings without servers: the monitor's `smtp` section (security, the legacy
`starttls`, the password from a file or the environment, the CA file), cdpipe's
CDPIPE_SMTP_* settings and what the inventory makes of them (the relay replaces the
local sink; the password never appears), and the role's template."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml

from cdpipe import PROJECT_ROOT, config
from cdpipe.config import Settings
from cdpipe.errors import CdpipeError
from cdpipe.inventory import build, mail_vars
from cdpipe.model import Instance, machine_ports
from cdpipe.providers.aws.provider import Ec2Provider
from cdpipe.state import State
from devkit.roles import role_defaults
from monitoring.config import PASSWORD_VARIABLE, ConfigError, Smtp, load


def write(tmp_path: Path, smtp: dict[str, Any]) -> Path:
    path = tmp_path / "monitor.yml"
    path.write_text(yaml.safe_dump({"smtp": smtp}), encoding="utf-8")
    return path


@pytest.mark.parametrize(("given", "security"), [
    ({}, "none"), ({"starttls": True}, "starttls"), ({"starttls": False}, "none"),
    ({"security": "tls"}, "tls"), ({"starttls": True, "security": "starttls"}, "starttls")])
def test_security_and_the_starttls_of_earlier_configurations(
        tmp_path: Path, given: dict[str, Any], security: str) -> None:
    assert load(write(tmp_path, given)).smtp.security == security


@pytest.mark.parametrize(("given", "says"), [
    ({"security": "ssl"}, "smtp.security: Input should be 'none', 'starttls' or 'tls'"),
    ({"starttls": True, "security": "tls"}, "starttls: true contradicts security: tls"),
    ({"starttls": "yes please"}, "starttls must be true or false"),
    ({"security": "none", "ca_file": "/etc/hostname"}, "ca_file needs security starttls"),
    ({"security": "tls", "ca_file": "/nonexistent/ca.pem"},
     "ca_file /nonexistent/ca.pem is not a readable file"),
    ({"password_file": "/nonexistent/pw"}, "password_file /nonexistent/pw is not a readable"),
    ({"user": "a\nb"}, "smtp.user: String should match pattern"),
])
def test_bad_mail_settings_are_one_line(tmp_path: Path, given: dict[str, Any],
                                        says: str) -> None:
    with pytest.raises(ConfigError) as bad:
        load(write(tmp_path, given))
    assert says in str(bad.value) and "\n" not in str(bad.value)


def test_the_password_is_read_at_each_delivery(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_VARIABLE, "from-env")
    secret = tmp_path / "pw"
    secret.write_text("first\n")
    smtp = Smtp(user="u", password_file=str(secret))
    assert smtp.password() == "first"
    secret.write_text("rotated\n")
    assert smtp.password() == "rotated"  # no restart needed
    assert Smtp(user="u").password() == "from-env"
    monkeypatch.delenv(PASSWORD_VARIABLE)
    assert Smtp(user="u").password() is None  # no password: no login


def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    for name, value in env.items():
        monkeypatch.setenv(f"CDPIPE_{name.upper()}", value)
    monkeypatch.setenv("CDPIPE_HOME", str(tmp_path / "home"))
    return config.load()


def test_no_relay_keeps_the_providers_mail(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    assert mail_vars(settings(tmp_path, monkeypatch)) == {}


def test_a_relay_from_cdpipe_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    s = settings(tmp_path, monkeypatch, smtp_host="172.31.0.1", smtp_port="2525",
                 smtp_user="cdpipe-monitor", smtp_ca_file=str(ca), smtp_password="pw-1",
                 mail_from="monitor@example.com", mail_to="a@example.com, b@example.com")
    assert mail_vars(s) == {
        "monitor_local_smtp": False, "monitor_smtp_host": "172.31.0.1",
        "monitor_smtp_port": 2525, "monitor_smtp_security": "starttls",
        "monitor_smtp_user": "cdpipe-monitor", "monitor_smtp_ca_file": str(ca),
        "monitor_mail_from": "monitor@example.com",
        "monitor_mail_to": ["a@example.com", "b@example.com"]}
    state = State(provider="aws", instances=[Instance(
        id="i-0proxy", role="proxy", host="203.0.113.5", private_address="10.0.0.5",
        ports=machine_ports("proxy"), provider="aws")])
    inv = build(s, state, Ec2Provider(s))
    # The relay's port, not the local sink's port of the proxy host; no password.
    assert "monitor_smtp_port" not in inv["all"]["children"]["proxy"]["hosts"]["i-0proxy"]
    assert inv["all"]["vars"]["monitor_smtp_port"] == 2525
    assert "pw-1" not in yaml.safe_dump(inv)


@pytest.mark.parametrize(("name", "value", "says"), [
    ("smtp_security", "ssl", "CDPIPE_SMTP_SECURITY"),
    ("mail_to", "ops@example.com, not an address", "CDPIPE_MAIL_TO"),
    ("smtp_ca_file", "/nonexistent/ca.pem", "CDPIPE_SMTP_CA_FILE"),
    ("smtp_port", "0", "CDPIPE_SMTP_PORT")])
def test_bad_cdpipe_mail_settings_are_one_line(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch,
                                               name: str, value: str, says: str) -> None:
    with pytest.raises(CdpipeError, match=f"^bad setting {says}: "):
        settings(tmp_path, monkeypatch, **{name: value})


def render_smtp(**role_vars: Any) -> dict[str, Any]:
    """The `smtp` section the role's template writes, rendered with Jinja alone."""
    defaults = role_defaults("monitor")
    template = (PROJECT_ROOT / "roles/monitor/templates/monitor.yml.j2").read_text()
    env = jinja2.Environment(extensions=["jinja2.ext.do"])
    env.filters["to_nice_yaml"] = lambda v, indent=2: yaml.safe_dump(v, indent=indent)
    env.filters["bool"] = bool
    env.filters["combine"] = lambda first, second: first | second
    values = {k: v for k, v in defaults.items() if not str(v).startswith("{{")}
    values |= {"monitor_dir": "/opt/cdpipe/monitor", "monitor_smtp_password": "",
               "monitor_redis_url": "", "groups": {}, "hostvars": {},
               "monitor_scale_command": ["cdpipe", "scale"]} | role_vars
    smtp: dict[str, Any] = yaml.safe_load(env.from_string(template).render(values))["smtp"]
    return smtp


def test_the_role_writes_the_relay_and_never_the_password() -> None:
    assert render_smtp() == {"host": "127.0.0.1", "port": 25, "security": "none",
                             "sender": "cdpipe-monitor@localhost",
                             "recipients": ["ops@localhost"]}
    relay = render_smtp(monitor_smtp_host="172.31.0.1", monitor_smtp_port=2525,
                        monitor_smtp_security="starttls", monitor_smtp_user="mon",
                        monitor_smtp_password="s3cret", monitor_smtp_ca_file="/x/ca.pem")
    assert relay == {
        "host": "172.31.0.1", "port": 2525, "security": "starttls", "user": "mon",
        "password_file": "/opt/cdpipe/monitor/smtp_password",
        "ca_file": "/opt/cdpipe/monitor/smtp_ca.pem", "sender": "cdpipe-monitor@localhost",
        "recipients": ["ops@localhost"]}
    assert "s3cret" not in str(relay)


def render_group_vars(environ: dict[str, str]) -> dict[str, Any]:
    """The mail variables of inventory/group_vars/all/main.yml (the AWS plugin path: its
    monitor_smtp_* and monitor_mail_*), rendered with Jinja and an env lookup over
    ``environ``."""
    raw = yaml.safe_load((PROJECT_ROOT / "inventory/group_vars/all/main.yml").read_text())
    env = jinja2.Environment()
    env.globals["lookup"] = lambda kind, name: environ.get(name, "")
    env.filters["trim"] = str.strip
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key.startswith(("monitor_smtp_", "monitor_mail_")):
            rendered = env.from_string(str(value)).render().strip()
            out[key] = yaml.safe_load(rendered) if rendered.startswith("[") or \
                rendered.isdigit() else rendered
    return out


def test_the_aws_group_vars_hold_the_same_relay(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    environ = {"CDPIPE_SMTP_HOST": "smtp.example.com", "CDPIPE_SMTP_USER": "mon",
               "CDPIPE_MAIL_TO": "a@example.com, b@example.com"}
    expected = mail_vars(settings(tmp_path, monkeypatch, **{
        k.removeprefix("CDPIPE_").lower(): v for k, v in environ.items()}))
    expected.pop("monitor_local_smtp")
    expected["monitor_mail_from"] = "cdpipe-monitor@localhost"
    assert render_group_vars(environ) == expected
    defaults = role_defaults("monitor")
    unset = render_group_vars({})
    assert unset == {k: defaults[k] for k in unset}  # no relay: the role's defaults
