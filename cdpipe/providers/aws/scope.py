"""What one environment's AWS calls are scoped to: the session, the region, the
environment's id, and the tags that mark everything the environment owns.

Everything cdpipe creates carries ``Project``, ``Environment`` and ``ManagedBy=cdpipe``
(and ``Role`` on instances); every lookup filters on them, so two environments in one
account never see each other's machines, groups or key pair.
"""

from __future__ import annotations

import os
import secrets
from typing import Any

import boto3
from botocore.config import Config

from cdpipe.config import Settings
from cdpipe.errors import CdpipeError

RETRIES = Config(retries={"max_attempts": 5, "mode": "standard"})


def new_environment_id() -> str:
    return f"env-{secrets.token_hex(4)}"


def tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def tags_of(raw: dict[str, Any]) -> dict[str, str]:
    """The tags of a described resource, as a dict."""
    return {t["Key"]: t["Value"] for t in raw.get("Tags", [])}


class Scope:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.session = boto3.session.Session()
        self.region = (settings.aws_region or os.environ.get("AWS_REGION")
                       or self.session.region_name)
        # The environment acted on: the provider's attach() takes it from the state;
        # ensure() makes one at the first provision when none is recorded or asked for.
        self.environment: str | None = settings.aws_environment
        self._ec2: Any = None
        self._iam: Any = None

    @property
    def ec2(self) -> Any:
        if self._ec2 is None:
            self._ec2 = self.session.client("ec2", region_name=self.region, config=RETRIES)
        return self._ec2

    @property
    def iam(self) -> Any:
        if self._iam is None:
            self._iam = self.session.client("iam", config=RETRIES)
        return self._iam

    def move_to(self, region: str) -> None:
        """Act in ``region`` from now on (the one the state records)."""
        self.region = region
        self._ec2 = None

    def env_id(self) -> str:
        if not self.environment:  # a guard: never select by tags without the id
            raise CdpipeError("no AWS environment is selected; run `cdpipe provision "
                              "--provider aws` or pass --env ID")
        return self.environment

    def prefix(self) -> str:
        """``<project>-<environment>``: the name of what the environment owns."""
        return f"{self.settings.aws_project}-{self.env_id()}"

    def tags(self, role: str | None = None) -> dict[str, str]:
        tags = {"Project": self.settings.aws_project,
                "Environment": self.env_id(), "ManagedBy": "cdpipe"}
        tags |= self.settings.aws_extra_tags
        if role:
            tags["Role"] = role
        return tags

    def filters(self, role: str | None = None) -> list[dict[str, Any]]:
        return [{"Name": f"tag:{k}", "Values": [v]} for k, v in self.tags(role).items()
                if k in ("Project", "Environment", "ManagedBy", "Role")]

    @staticmethod
    def tag_spec(kind: str, tags: dict[str, str]) -> list[dict[str, Any]]:
        return [{"ResourceType": kind, "Tags": tag_list(tags)}]
