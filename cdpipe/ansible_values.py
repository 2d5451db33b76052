"""The values Ansible takes from cdpipe's model, written out as vars files.

One home per value: the Python module that owns the fact (ports and machine paths in
``cdpipe.model``, the canary's weight in ``cdpipe_host.values``, the monitor's defaults
in ``monitoring.config``, the Redis users' rules in ``cdpipe.redis_users``...). A role
used alone from a laptop keeps its documented defaults, in a file generated from that
model (``roles/<role>/defaults/main/model.yml``, beside the role's typed
``main.yml``); the AWS inventory's group_vars get theirs the same way
(``inventory/group_vars/all/model.yml``). cdpipe's own inventory sets the same
variables from the same model at run time.

``python -m cdpipe.ansible_values`` (``make generated``) writes the files;
tests/unit/test_generated_vars.py fails, naming that command, when one is out of date.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from cdpipe import PROJECT_ROOT, scaler
from cdpipe.config import Settings
from cdpipe.inventory import REDIS_PASSWORDS, REDIS_URLS
from cdpipe.model import (
    CODE_DIR,
    DASHBOARD_PORT,
    INSTANCE_DIR,
    MACHINE_PATHS,
    PORTS,
    SCALER_DIR,
    SCALER_USER,
)
from cdpipe.redis_users import ACL, acl_rules
from cdpipe_host.edge import PUBLIC_HEALTH_PATH, PUBLIC_PATHS
from cdpipe_host.haproxy import APP_BACKEND
from cdpipe_host.values import DEFAULT_CANARY_WEIGHT
from monitoring.config import SCALE_MAX_LIMIT, CanaryJudge, MonitorConfig, Scaling, Smtp

GENERATED = "model.yml"
GROUP_VARS = PROJECT_ROOT / "inventory" / "group_vars" / "all" / GENERATED
COMMAND = "python -m cdpipe.ansible_values"


class Value(NamedTuple):
    name: str
    value: Any
    comment: str  # one line: what it holds (the role's typed file says how it is used)
    source: str  # the Python name it comes from


def _default(model: Any, field: str) -> Any:
    return model.model_fields[field].get_default(call_default_factory=True)


def _ports() -> dict[str, list[Value]]:
    found: dict[str, list[Value]] = {}
    seen: set[str] = set()
    for role, ports in PORTS.items():
        for name, (number, var) in ports.items():
            if var in seen:
                continue
            seen.add(var)
            owner = var.split("_", 1)[0]  # every variable carries its role's prefix
            found.setdefault(owner, []).append(Value(
                var, number, f"the {name} port on a machine (cdpipe's inventory sets it)",
                f"cdpipe.model.PORTS[{role!r}][{name!r}]"))
    return found


def _code_dir(role: str) -> Value:
    return Value(f"{role}_machine_code_dir", CODE_DIR,
                 "where the code role ships the host code on a machine, when "
                 "cdpipe_code_dir is not set", "cdpipe.model.CODE_DIR")


def _field(name: str, model: Any, field: str, comment: str) -> Value:
    """The Ansible variable ``name`` holding the default of a pydantic model's field."""
    return Value(name, _default(model, field), comment,
                 f"{model.__module__}.{model.__qualname__}.{field}")


# The monitor role's variables of monitoring.config's fields: (variable, model, field,
# what it holds).
MONITOR_FIELDS: list[tuple[str, Any, str, str]] = [
    ("monitor_interval_seconds", MonitorConfig, "interval_seconds", "seconds between polls"),
    ("monitor_timeout_seconds", MonitorConfig, "timeout_seconds",
     "per-request timeout of a poll"),
    ("monitor_down_after_polls", MonitorConfig, "down_after_polls",
     "failed polls that make an instance down"),
    ("monitor_repeat_interval_seconds", MonitorConfig, "repeat_interval_seconds",
     "reminder mail of a still-firing alert after this long"),
    ("monitor_scale_command", Scaling, "command",
     "the command that scales (the autoscaler appends out|in --max N)"),
    ("monitor_scale_cooldown_seconds", Scaling, "cooldown_seconds",
     "the pause after each scale action"),
    ("monitor_scale_max_count", Scaling, "max_count", "the most prod instances"),
    ("monitor_scale_warmup_seconds", Scaling, "warmup_seconds",
     "a new instance's first seconds, out of a scaling rule's average"),
    ("monitor_canary_min_requests", CanaryJudge, "min_requests",
     "requests a canary verdict needs"),
    ("monitor_canary_window_seconds", CanaryJudge, "window_seconds",
     "the longest window the canary judge compares over"),
    ("monitor_canary_max_error_rate", CanaryJudge, "max_error_rate",
     "the canary's 5xx rate ceiling (prod beyond it: inconclusive)"),
    ("monitor_canary_max_p95_ms", CanaryJudge, "max_p95_ms",
     "the canary's p95 ceiling (prod beyond it: inconclusive)"),
    ("monitor_canary_error_rate_margin", CanaryJudge, "error_rate_margin",
     "how much higher the canary's error rate may be"),
    ("monitor_canary_latency_factor", CanaryJudge, "latency_factor",
     "how many times prod's p95 the canary's may be"),
    ("monitor_canary_latency_margin_ms", CanaryJudge, "latency_margin_ms",
     "and by at least this many ms"),
    ("monitor_smtp_host", Smtp, "host", "the SMTP server mail leaves by"),
    ("monitor_smtp_security", Smtp, "security", "none | starttls | tls"),
    ("monitor_mail_from", Smtp, "sender", "the alerts' sender"),
    ("monitor_mail_to", Smtp, "recipients", "the alerts' recipients"),
]


def _monitor() -> list[Value]:
    return [*(_field(*entry) for entry in MONITOR_FIELDS),
            Value("monitor_proxy_stats_port", PORTS["proxy"]["stats"][0],
                  "HAProxy's stats port on the proxy's host, when its inventory does not "
                  "name it (the AWS inventory)", "cdpipe.model.PORTS['proxy']['stats']"),
            _code_dir("monitor")]


def _proxy_shared() -> list[Value]:
    """The proxy role's values the AWS group_vars hold too."""
    return [Value("proxy_backend", APP_BACKEND, "the backend of the app servers",
                  "cdpipe_host.haproxy.APP_BACKEND"),
            Value("proxy_canary_weight", DEFAULT_CANARY_WEIGHT,
                  "the canary's initial share of requests, percent (canary:weight unless "
                  "set)", "cdpipe_host.values.DEFAULT_CANARY_WEIGHT")]


def _keep_releases() -> Value:
    return _field("app_keep_releases", Settings, "keep_releases",
                  "releases kept on each app machine")


def role_values() -> dict[str, list[Value]]:
    """Per role, the generated defaults."""
    roles = _ports()
    roles.setdefault("proxy", []).extend([
        *_proxy_shared(),
        Value("proxy_public_paths", list(PUBLIC_PATHS),
              "the app's public routes, the only paths the proxy forwards",
              "cdpipe_host.edge.PUBLIC_PATHS"),
        Value("proxy_public_health_path", PUBLIC_HEALTH_PATH,
              "the public health check's path (HAProxy's own answer)",
              "cdpipe_host.edge.PUBLIC_HEALTH_PATH"),
        _code_dir("proxy"),
    ])
    roles.setdefault("monitor", []).extend(_monitor())
    roles["scaler"] = [
        Value("scaler_user", SCALER_USER, "the user scale actions run as",
              "cdpipe.model.SCALER_USER"),
        Value("scaler_dashboard_port", DASHBOARD_PORT, "the dashboard's port",
              "cdpipe.model.DASHBOARD_PORT"),
        Value("scaler_scale_max_limit", SCALE_MAX_LIMIT,
              "the largest --max the sudo rule lets the monitor pass",
              "monitoring.config.SCALE_MAX_LIMIT"),
    ]
    roles.setdefault("redis", []).append(Value(
        "redis_acl_users", [{"name": user, "rules": acl_rules(user)} for user in ACL],
        "the users and their ACL rules (Redis 7); what each is for: cdpipe.redis_users.ACL",
        "cdpipe.redis_users.ACL"))
    roles.setdefault("agent", []).append(_code_dir("agent"))
    roles.setdefault("code", []).append(_code_dir("code"))
    roles["machine"] = [Value("machine_default_instance_dir", INSTANCE_DIR,
                              "where everything cdpipe puts on a machine lives, when "
                              "cdpipe_instance_dir is not set", "cdpipe.model.INSTANCE_DIR")]
    roles.setdefault("app", []).extend([
        Value("app_machine_paths", MACHINE_PATHS,
              "the machine paths of the proxy host, when its inventory does not name them",
              "cdpipe.model.MACHINE_PATHS"),
        _keep_releases(),
    ])
    return roles


def group_values() -> list[Value]:
    """The AWS inventory's group_vars that come from the model (its typed main.yml holds
    what comes from the CDPIPE_* settings at run time)."""
    redis_port = PORTS["redis"]["redis"][0]
    return [
        Value("cdpipe_provider", "aws", "the provider of this inventory's machines", "-"),
        Value("cdpipe_install_packages", True, "machines get their Debian packages", "-"),
        *(Value(name, path, "a machine path", f"cdpipe.model.MACHINE_PATHS[{name!r}]")
          for name, path in MACHINE_PATHS.items()),
        Value("cdpipe_redis_port", redis_port, "Redis' port on its machine",
              "cdpipe.model.PORTS['redis']['redis']"),
        Value("cdpipe_redis_passwords", REDIS_PASSWORDS,
              "one password per Redis user, read on the control machine",
              "cdpipe.inventory.REDIS_PASSWORDS"),
        Value("cdpipe_redis_urls", REDIS_URLS, "each Redis user's URL (roles pick theirs)",
              "cdpipe.inventory.REDIS_URLS"),
        *_proxy_shared(),
        Value("monitor_scale_command", scaler.scale_command(SCALER_DIR, SCALER_USER),
              "the monitor scales through the scaler on its machine (roles/scaler)",
              "cdpipe.scaler.scale_command"),
        _keep_releases(),
    ]


class _Dumper(yaml.SafeDumper):
    """yamllint's style: list items indented under their key, long strings folded."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = ">" if len(value) > 80 and "\n" not in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _text)


def render(values: Iterable[Value]) -> str:
    lines = ["---",
             f"# Generated from cdpipe's model by `{COMMAND}` (`make generated`): do not",
             "# edit; change the Python name after each value's comment instead."]
    for value in values:
        source = "" if value.source == "-" else f" ({value.source})"
        lines += textwrap.wrap(value.comment + source, 96, initial_indent="# ",
                               subsequent_indent="# ")
        dumped = yaml.dump({value.name: value.value}, Dumper=_Dumper,
                           default_flow_style=False, sort_keys=False, width=88,
                           allow_unicode=True)
        lines.append(dumped.rstrip("\n"))
    return "\n".join(lines) + "\n"


def files() -> dict[Path, str]:
    """Every generated file and its content."""
    out = {PROJECT_ROOT / "roles" / role / "defaults" / "main" / GENERATED: render(values)
           for role, values in sorted(role_values().items())}
    out[GROUP_VARS] = render(group_values())
    return out


def stale() -> list[Path]:
    """The generated files whose content on disk is not what the model gives."""
    return [path for path, text in files().items()
            if not path.exists() or path.read_text(encoding="utf-8") != text]


def main() -> int:
    changed = stale()
    wanted = files()
    for path in changed:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(wanted[path], encoding="utf-8")
        print(f"wrote {path.relative_to(PROJECT_ROOT)}")
    if not changed:
        print(f"{len(wanted)} generated vars files are current")
    return 0


if __name__ == "__main__":
    sys.exit(main())
