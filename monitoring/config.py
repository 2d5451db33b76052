"""The monitor's configuration: one YAML file (written by the ``monitor`` role).

Bad files are refused at start with one line naming the problem.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

Metric = Literal["cpu_percent", "memory_percent"]
METRIC_SERIES = {"cpu_percent": "instance_cpu_percent",
                 "memory_percent": "instance_memory_percent"}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Rule(Strict):
    """A breach is the metric above ``upper`` for ``for`` consecutive polls; the alert
    resolves after ``keep_firing_for`` clear polls in a row (default: ``for``).
    ``lower`` is where a scaling rule scales in (the average below it for ``for``
    polls)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
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
        return self

    @property
    def clear_polls(self) -> int:
        """Clear polls in a row that resolve a firing alert of this rule."""
        return self.keep_firing_for or self.for_polls


class Target(Strict):
    id: str
    role: str
    url: str


class Smtp(Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=25, ge=1, le=65535)
    starttls: bool = False
    sender: str = "cdpipe-monitor@localhost"
    recipients: list[str] = Field(default_factory=lambda: ["ops@localhost"], min_length=1)
    timeout_seconds: float = 5.0

    @property
    def user(self) -> str | None:
        return os.environ.get("MONITOR_SMTP_USER") or None

    @property
    def password(self) -> str | None:
        return os.environ.get("MONITOR_SMTP_PASSWORD") or None


class Scaling(Strict):
    command: list[str] = Field(default_factory=lambda: ["cdpipe", "scale"], min_length=1)
    cooldown_seconds: float = Field(default=300, ge=0)
    max_count: int = Field(default=4, ge=1)


class CanaryJudge(Strict):
    enabled: bool = True
    min_requests: int = Field(default=20, ge=1)
    window_polls: int = Field(default=5, ge=1)
    error_rate_margin: float = Field(default=0.05, ge=0, le=1)
    latency_factor: float = Field(default=1.5, ge=1)
    latency_margin_ms: float = Field(default=50, ge=0)
    ignore_routes: list[str] = Field(default_factory=lambda: ["/metrics", "/healthz"])


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

    @model_validator(mode="after")
    def _unique(self) -> MonitorConfig:
        names = [r.name for r in self.rules]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"rule names must be unique: {', '.join(sorted(dupes))}")
        return self


class ConfigError(Exception):
    """One line: what is wrong with the monitor's configuration."""


def load(path: str | Path, rules_path: str | Path | None = None,
         interval: float | None = None) -> MonitorConfig:
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        if rules_path is not None:
            rules = yaml.safe_load(Path(rules_path).read_text(encoding="utf-8")) or {}
            data["rules"] = rules.get("rules", []) if isinstance(rules, dict) else rules
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read the monitor's configuration: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top")
    if interval is not None:
        data["interval_seconds"] = interval
    data["redis_url"] = os.environ.get("MONITOR_REDIS_URL", data.get("redis_url", ""))
    try:
        return MonitorConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "file"
        msg = err["msg"].removeprefix("Value error, ")
        raise ConfigError(f"invalid monitor configuration at {where}: {msg}") from None
