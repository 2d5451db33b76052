"""Settings of the control plane, from ``CDPIPE_*`` environment variables.

Defaults give the local environment of this checkout: state under ``.cdpipe/``,
ports from 18000 on 127.0.0.1, and this repository as the source of releases.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, FilePath, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from cdpipe import PROJECT_ROOT, socket_dir
from cdpipe.errors import CdpipeError
from cdpipe_host.names import shown
from cdpipe_host.values import DEFAULT_CANARY_WEIGHT
from monitoring.config import MAIL_ADDRESS

ProviderName = Literal["local", "aws"]
# An environment's id: it becomes part of resource names (cdpipe-<id>-app) and a tag.
ENVIRONMENT_ID_PATTERN = r"^[a-z0-9][a-z0-9-]{0,39}$"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CDPIPE_", extra="ignore")

    home: Path = Field(default=PROJECT_ROOT / ".cdpipe",
                       description="state, secrets, logs and local sandboxes")
    provider: ProviderName = "local"
    port_base: int = Field(default=18000, ge=1024, le=64000,
                           description="first local port; each instance takes a block of 10")
    app_repo: str = Field(default=str(PROJECT_ROOT),
                          description="git repository the releases are cloned from")
    app_deploy_key_file: FilePath | None = Field(
        default=None, description="private key of a deploy key for a private app_repo "
                                  "over SSH, on this machine (never in git)")
    canary_weight: int = Field(default=DEFAULT_CANARY_WEIGHT, ge=0, le=100,
                               description="the canary's initial share of requests, "
                                           "percent: canary:weight unless it is set")
    keep_releases: int = Field(default=5, ge=1)
    dashboard_actor: str = Field(
        default="", description="a command prefix through which `cdpipe dashboard` reads "
                                "the state and runs promote and rollback as another user "
                                "(cdpipe.dashboard.actor); empty: it acts itself")
    runtime_dir: Path | None = Field(
        default=None, description="where local sockets live; else a short directory of "
                                  "the system's temporary directory, keyed by home")

    # Local instances are machines of this size: a control group limits each sandbox to
    # it, and its CPU and memory percentages are relative to it (see docs/monitoring.md,
    # "Metrics").
    local_vcpus: float = Field(default=1.0, ge=0.1, le=64,
                               description="CPUs of each local instance (fractions allowed)")
    local_memory_mb: int = Field(default=1024, ge=128, le=1024 * 1024,
                                 description="memory of each local instance, MiB")
    local_cgroups: Literal["auto", "off"] = Field(
        default="auto", description="auto: limit each local sandbox with a control group "
                                    "where the host allows it; off: never (figures are "
                                    "then read from each sandbox's processes)")

    # AWS (provider aws). Credentials come from boto3's usual chain (environment,
    # profile, instance role), never from here; AWS_ENDPOINT_URL(_EC2) are honoured.
    aws_region: str | None = Field(default=None, description="else AWS_REGION / AWS_DEFAULT_REGION")
    aws_environment: str | None = Field(
        default=None, pattern=ENVIRONMENT_ID_PATTERN,
        description="the environment's id (tag Environment); else the one in the state "
                    "file, else a new env-<8 hex> at the first provision")
    aws_project: str = Field(default="cdpipe", pattern=r"^[a-z0-9-]+$")
    aws_instance_type: str = "t3.small"
    aws_ami_name_filter: str = "ubuntu/images/hvm-ssd*/ubuntu-noble-24.04-amd64-server-*"
    aws_ami_owner: str = "099720109477"  # Canonical
    aws_ami_ssm_parameter: str | None = None
    aws_subnet_id: str | None = None
    aws_key_name: str | None = Field(
        default=None, description="an existing key pair to use as it is; else cdpipe "
                                  "imports the public key as <project>-<environment>")
    aws_public_key_file: Path = Path("~/.ssh/id_ed25519.pub")
    aws_private_key_file: Path = Path("~/.ssh/id_ed25519")
    aws_ssh_user: str = "ubuntu"
    aws_admin_cidr: str | None = Field(default=None,
                                       description="who may SSH in, e.g. 203.0.113.7/32")
    aws_extra_tags: dict[str, str] = Field(default_factory=dict)
    aws_address: Literal["public", "private"] = Field(
        default="public", description="the address the control machine uses: public (a "
                                      "laptop) or private (inside the VPC, e.g. Jenkins)")
    aws_ssh_wait_seconds: float = Field(
        default=300, ge=0, description="how long new instances may take to answer SSH; "
                                       "0: do not wait")
    aws_extra_ssh_key_file: Path | None = Field(
        default=None, description="a public key every instance created from here also "
                                  "authorises for the SSH user (cloud-init user data): the "
                                  "scaler's own key, on the proxy machine")
    aws_machine_environment: dict[str, str] = Field(
        default_factory=dict, description="extra environment variables of cdpipe on the "
                                          "environment's machines (the scaler): the cloud "
                                          "endpoints of a test cloud; never credentials")
    aws_delete_wait_seconds: float = Field(
        default=180, ge=0, description="how long `down` retries a security group that "
                                       "AWS still reports in use (DependencyViolation)")

    # Alert mail through an SMTP relay (see docs/monitoring.md, "Mail"). Unset host: the local
    # provider's Maildir sink; on AWS mail then waits in the outbox. The password is the
    # secrets directory's smtp_password, else CDPIPE_SMTP_PASSWORD (never here).
    smtp_host: str | None = Field(default=None, pattern=r"^[A-Za-z0-9.:_-]{1,253}$",
                                  description="the relay the monitor sends alert mail by")
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_security: Literal["none", "starttls", "tls"] = Field(
        default="starttls", description="starttls (port 587), tls (465) or none")
    smtp_user: str | None = Field(default=None, description="login; none: no login")
    smtp_ca_file: FilePath | None = Field(
        default=None, description="CA of a private relay's certificate (on this machine); "
                                  "else the system's CAs")
    mail_from: str | None = Field(default=None, pattern=MAIL_ADDRESS)
    mail_to: str | None = Field(default=None, description="recipients, comma-separated")

    @field_validator("mail_to")
    @classmethod
    def _recipients(cls, value: str | None) -> str | None:
        if value is None:
            return None
        bad = [a for a in value.split(",") if not re.fullmatch(MAIL_ADDRESS, a.strip())]
        if bad or not value.strip():
            raise ValueError(f"not a mail address: {shown(bad[0] if bad else value)}; give "
                             "addresses separated by commas")
        return value

    @property
    def mail_recipients(self) -> list[str]:
        return [a.strip() for a in (self.mail_to or "").split(",") if a.strip()]

    @property
    def state_file(self) -> Path:
        return self.home / "state.json"

    @property
    def inventory_file(self) -> Path:
        return self.home / "inventory.yml"

    @property
    def secrets_dir(self) -> Path:
        return self.home / "secrets"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def instances_dir(self) -> Path:
        return self.home / "instances"

    @property
    def run_dir(self) -> Path:
        """Where the local sandboxes' UNIX sockets live (``cdpipe.socket_dir``)."""
        return self.runtime_dir or socket_dir.default_for(self.home)


def check_environment_id(value: str, source: str) -> str:
    """``value`` if it is a valid environment id, else a one-line error naming ``source``."""
    if not re.fullmatch(ENVIRONMENT_ID_PATTERN, value):
        raise CdpipeError(f"{source} {shown(value)} is not an environment id: use up to 40 "
                          "lowercase letters, digits and '-', e.g. env-staging")
    return value


def load() -> Settings:
    from pydantic import ValidationError

    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = "CDPIPE_" + str(first["loc"][0]).upper() if first["loc"] else "CDPIPE_*"
        raise CdpipeError(f"bad setting {name}: {first['msg']}; fix or unset it") from None
