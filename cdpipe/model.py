"""What an instance is, whatever the provider: an id, a role, an address and ports."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

Role = Literal["proxy", "redis", "prod", "canary"]
ROLES: tuple[Role, ...] = ("proxy", "redis", "prod", "canary")
APP_ROLES: tuple[Role, ...] = ("prod", "canary")

# Named ports each role listens on, in the order of its local port block.
ROLE_PORTS: dict[str, tuple[str, ...]] = {
    "proxy": ("http", "stats", "agent", "smtp"),
    "redis": ("redis", "agent"),
    "prod": ("http", "check"),
    "canary": ("http", "check"),
}


class Instance(BaseModel):
    id: str
    role: Role
    host: str
    ports: dict[str, int]
    provider: str
    directory: str | None = None  # local sandboxes only
    autoscaled: bool = False

    def url(self, port: str = "http") -> str:
        if self.role == "redis":
            return f"redis://{self.host}:{self.ports['redis']}"
        return f"http://{self.host}:{self.ports[port]}"
