"""The controller's settings: a JSON file written by the proxy role (mode 0600)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from cdpipe_host.haproxy import APP_BACKEND


@dataclass(frozen=True)
class ControllerConfig:
    redis_url: str
    base_file: str
    config_file: str
    socket: str
    # The key of the persistence cookie's values (cdpipe_host.edge.server_cookie).
    cookie_key: str
    reload_command: str = ""
    # HAProxy's master CLI socket: when set, the controller reloads HAProxy by sending
    # `reload` to it (machines: the controller runs as haproxy, the master as root);
    # otherwise it runs reload_command (the local sandbox: supervisorctl signal).
    master_socket: str = ""
    backend: str = APP_BACKEND
    health_path: str = "/healthz"
    resync_seconds: float = 1.0
    drain_timeout_seconds: float = 60.0
    haproxy_binary: str = "haproxy"

    @classmethod
    def load(cls, path: str) -> ControllerConfig:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        data["redis_url"] = os.environ.get("CONTROLLER_REDIS_URL", data.get("redis_url", ""))
        return cls(**data)
