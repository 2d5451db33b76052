"""The monitor's configuration: one YAML file (written by the ``monitor`` role).

Bad files are refused at start with one line naming the problem.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

# Addresses that go into mail headers: no blanks, no control characters, one '@'.
MAIL_ADDRESS = r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9.-]+$"
Metric = Literal["cpu_percent", "memory_percent"]
METRIC_SERIES = {"cpu_percent": "instance_cpu_percent",
                 "memory_percent": "instance_memory_percent"}

# The most prod instances a scale action may be asked for (`cdpipe scale out|in --max`,
# the monitor's max_count): the scaler's sudo rule (roles/scaler, scaler_scale_max_limit)
# accepts no larger --max, so a caller cannot make the scaler launch without bound.
SCALE_MAX_LIMIT = 20


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Rule(Strict):
    """A breach is the metric above ``upper`` for ``for`` consecutive polls; the alert
    resolves after ``keep_firing_for`` clear polls in a row (default: ``for``).
    ``lower`` is where a scaling rule scales in (the average below it for ``for``
    polls)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    metric: Metric
    role: Literal["proxy", "redis", "prod", "canary"]
    upper: float = Field(ge=0, le=100)
    lower: float | None = Field(default=None, ge=0, le=100)
    for_polls: int = Field(default=1, ge=1, alias="for")
    keep_firing_for: int | None = Field(default=None, ge=1)
    aggregate: Literal["avg", "each"] = "avg"
    scale: bool = False

    @model_validator(mode="after")
    def _check(self) -> Rule:
        if self.lower is not None and self.lower >= self.upper:
            raise ValueError(f"rule {self.name}: lower ({self.lower}) must be below "
                             f"upper ({self.upper})")
        if self.scale and (self.role != "prod" or self.aggregate != "avg"):
            raise ValueError(f"rule {self.name}: only an avg rule on role prod can scale")
        if self.scale and self.lower is not None and self.lower > self.upper / 2:
            # One instance more can halve the average (1 -> 2), one fewer double it: a
            # lower bound above half the upper one scales back in right after a
            # scale-out, and out again after the scale-in.
            raise ValueError(
                f"rule {self.name}: lower ({self.lower:g}) must be at most half of upper "
                f"({self.upper:g}) on a scaling rule: one more instance can halve the "
                "average, which would then be below lower and scale back in (the "
                "instances would come and go)")
        return self

    @property
    def clear_polls(self) -> int:
        """Clear polls in a row that resolve a firing alert of this rule."""
        return self.keep_firing_for or self.for_polls


class Target(Strict):
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    role: str
    url: str


Security = Literal["none", "starttls", "tls"]
PASSWORD_VARIABLE = "MONITOR_SMTP_PASSWORD"
USER_VARIABLE = "MONITOR_SMTP_USER"


class Smtp(Strict):
    """The SMTP server mail leaves by: a relay (``security`` starttls: STARTTLS before
    anything else, refused if the server does not offer it; tls: TLS from the first
    byte, e.g. port 465) or, locally, the Maildir sink (none). With TLS the certificate
    and the host name are always verified, against ``ca_file`` when it is set (a private
    relay's CA), else the system's CAs. The login is ``user`` with the password read
    from ``password_file`` (a file only the monitor can read) at each delivery, else
    from the monitor's ``MONITOR_SMTP_PASSWORD``; no password: no login. ``starttls:
    true`` of earlier configurations still means ``security: starttls``."""

    host: str = Field(default="127.0.0.1", pattern=r"^[A-Za-z0-9.:_-]{1,253}$")
    port: int = Field(default=25, ge=1, le=65535)
    security: Security = "none"
    user: str | None = Field(default=None, pattern=r"^[^\x00-\x1f\x7f]{1,256}$")
    password_file: str | None = None
    ca_file: str | None = None
    sender: str = Field(default="cdpipe-monitor@localhost", pattern=MAIL_ADDRESS)
    recipients: list[Annotated[str, Field(pattern=MAIL_ADDRESS)]] = Field(
        default_factory=lambda: ["ops@localhost"], min_length=1)
    timeout_seconds: float = Field(default=5.0, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _legacy_starttls(cls, data: object) -> object:
        """``starttls: true|false`` (earlier configurations) becomes ``security``."""
        if isinstance(data, dict) and "starttls" in data:
            data = dict(data)
            legacy = data.pop("starttls")
            if not isinstance(legacy, bool):
                raise ValueError("starttls must be true or false (better: security: "
                                 "none | starttls | tls)")
            wanted = "starttls" if legacy else "none"
            if data.setdefault("security", wanted) != wanted and legacy:
                raise ValueError(f"starttls: true contradicts security: "
                                 f"{data['security']}; keep only security")
        return data

    @model_validator(mode="after")
    def _files(self) -> Smtp:
        for name in ("password_file", "ca_file"):
            path = getattr(self, name)
            if path is not None and not os.access(path, os.R_OK):
                raise ValueError(f"{name} {path} is not a readable file")
        if self.ca_file is not None and self.security == "none":
            raise ValueError("ca_file needs security starttls or tls")
        return self

    @property
    def login_user(self) -> str | None:
        """The user name to log in with (``MONITOR_SMTP_USER`` of earlier versions when
        the configuration names none)."""
        return self.user or os.environ.get(USER_VARIABLE) or None

    def password(self) -> str | None:
        """The login's password, read now (a rotated file is picked up without a
        restart); OSError when the file cannot be read."""
        if self.password_file is not None:
            with open(self.password_file, encoding="utf-8") as fh:
                return fh.read().strip() or None
        return os.environ.get(PASSWORD_VARIABLE) or None

    def describe(self) -> str:
        return f"{self.host}:{self.port} ({self.security})"


class Scaling(Strict):
    command: list[str] = Field(default_factory=lambda: ["cdpipe", "scale"], min_length=1)
    cooldown_seconds: float = Field(default=300, ge=0)
    max_count: int = Field(default=4, ge=1, le=SCALE_MAX_LIMIT)
    # A new instance's first seconds do not count in a scaling rule's average.
    warmup_seconds: float = Field(default=180, ge=0)


class CanaryJudge(Strict):
    enabled: bool = True
    min_requests: int = Field(default=20, ge=1)
    # The window: polls since the canary's release changed, within the last this many
    # seconds (a count of polls would never reach min_requests at short intervals).
    window_seconds: float = Field(default=600, ge=1)
    # Absolute ceilings: a canary beyond either fails whatever prod does; a prod beyond
    # either makes the verdict inconclusive (never a pass).
    max_error_rate: float = Field(default=0.05, ge=0, le=1)
    max_p95_ms: float = Field(default=1000, gt=0)
    error_rate_margin: float = Field(default=0.05, ge=0, le=1)
    latency_factor: float = Field(default=1.5, ge=1)
    latency_margin_ms: float = Field(default=50, ge=0)
    ignore_routes: list[str] = Field(default_factory=lambda: ["/metrics", "/healthz"])


class ProxyStats(Strict):
    """HAProxy's stats page (CSV), read for the canary judge: HAProxy's own count of
    each app server's answers and 5xx (monitoring.proxy_stats)."""

    url: str = Field(pattern=r"^https?://[^\s]{1,500}$")
    user: str = "admin"
    password_file: str | None = None
    backend: str = "app"


class MonitorConfig(Strict):
    interval_seconds: float = Field(default=90, ge=1)
    timeout_seconds: float = Field(default=5, gt=0)
    down_after_polls: int = Field(default=2, ge=1)
    repeat_interval_seconds: float = Field(default=3600, ge=1)
    redis_url: str = ""
    targets: list[Target] = Field(default_factory=list)
    discover_roles: list[str] = Field(default_factory=lambda: ["prod", "canary"])
    smtp: Smtp = Field(default_factory=Smtp)
    rules: list[Rule] = Field(default_factory=list)
    scaling: Scaling = Field(default_factory=Scaling)
    canary: CanaryJudge = Field(default_factory=CanaryJudge)
    proxy_stats: ProxyStats | None = None

    @model_validator(mode="after")
    def _unique(self) -> MonitorConfig:
        names = [r.name for r in self.rules]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"rule names must be unique: {', '.join(sorted(dupes))}")
        return self


class ConfigError(Exception):
    """One line: what is wrong with the monitor's configuration."""


def _one_line(value: object, limit: int = 60) -> str:
    line = " ".join(str(value).split())
    return line if len(line) <= limit else line[:limit] + "..."


def _read_yaml(path: str | Path) -> object:
    """A YAML file's content, or ConfigError in one line (YAML's own messages span
    several: the line and column are kept, the excerpt of the file is not)."""
    try:
        return yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None


def _read_rules(rules_path: str | Path) -> object:
    """The ``rules:`` list of a rules file (or the file itself when it is a list)."""
    data = _read_yaml(rules_path) or {}
    if not isinstance(data, dict):
        return data
    unknown = sorted(str(k) for k in data if k != "rules")
    if unknown:
        raise ConfigError(f"{rules_path}: unknown key {_one_line(unknown[0])!r} at the top "
                          "(a rules file holds only `rules:`)")
    return data.get("rules", [])


def _validation_line(exc: ValidationError, path: str | Path,
                     rules_path: str | Path | None) -> str:
    """The first error as one line: the file, the field's path, what is wrong, and the
    value it got when that is a scalar."""
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "file"
    msg = _one_line(err["msg"].removeprefix("Value error, "), 200)
    source = rules_path if rules_path is not None and err["loc"][:1] == ("rules",) else path
    value = err.get("input")
    got = ("" if err["type"] == "missing" or isinstance(value, (dict, list))
           else f" (got {_one_line(repr(value))})")
    return f"{source}: invalid monitor configuration at {where}: {msg}{got}"


def check_rules(rules_path: str | Path) -> int:
    """How many rules a rules file holds, checked as the monitor checks it at start
    (ConfigError in one line when it is bad): for the CLI, before anything runs."""
    try:
        return len(MonitorConfig.model_validate({"rules": _read_rules(rules_path)}).rules)
    except ValidationError as exc:
        raise ConfigError(_validation_line(exc, rules_path, rules_path)) from None


def load(path: str | Path, rules_path: str | Path | None = None,
         interval: float | None = None) -> MonitorConfig:
    data = _read_yaml(path) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top")
    if rules_path is not None:
        data["rules"] = _read_rules(rules_path)
    if interval is not None:
        data["interval_seconds"] = interval
    data["redis_url"] = os.environ.get("MONITOR_REDIS_URL", data.get("redis_url", ""))
    try:
        return MonitorConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_validation_line(exc, path, rules_path)) from None
