"""What an instance is, whatever the provider: an id, a role, addresses and ports."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

Role = Literal["proxy", "redis", "prod", "canary"]
ROLES: tuple[Role, ...] = ("proxy", "redis", "prod", "canary")
APP_ROLES: tuple[Role, ...] = ("prod", "canary")

# The one table of ports: the named ports of each role, the port each has on a machine
# (EC2), and the role variable that carries it to Ansible. Locally an instance takes a
# block of ports from CDPIPE_PORT_BASE instead, in this order.
_APP_PORTS = {"http": (8000, "app_port"), "check": (8001, "app_check_port")}
PORTS: dict[str, dict[str, tuple[int, str]]] = {
    "proxy": {"http": (80, "proxy_frontend_port"), "stats": (8404, "proxy_stats_port"),
              "agent": (9100, "agent_port"), "smtp": (25, "monitor_smtp_port")},
    "redis": {"redis": (6379, "redis_port"), "agent": (9100, "agent_port")},
    "prod": _APP_PORTS,
    "canary": _APP_PORTS,
}
SSH_PORT = 22
# The live dashboard (`cdpipe dashboard`; on EC2 it runs on the proxy machine, on
# loopback, reached through an SSH tunnel).
DASHBOARD_PORT = 8099

# Where everything cdpipe puts on a machine lives, and the paths of it that more than
# one role uses (the Ansible variables that carry them; cdpipe.ansible_values writes
# them into the AWS inventory's group_vars and the roles' generated defaults).
INSTANCE_DIR = "/opt/cdpipe"
CODE_DIR = f"{INSTANCE_DIR}/code"
MACHINE_PATHS: dict[str, str] = {
    "cdpipe_instance_dir": INSTANCE_DIR,
    "cdpipe_code_dir": CODE_DIR,
    "cdpipe_python": f"{CODE_DIR}/venv/bin/python",
    "proxy_dir": f"{INSTANCE_DIR}/haproxy",
    "proxy_controller_config": f"{INSTANCE_DIR}/haproxy/controller.json",
    "proxy_deployer_config": f"{INSTANCE_DIR}/haproxy/deployer.json",
}
# The scaler (roles/scaler, on the proxy machine): its directory and its user.
SCALER_DIR, SCALER_USER = f"{INSTANCE_DIR}/scaler", "cdpipe-scaler"


def machine_ports(role: str) -> dict[str, int]:
    """The named ports of a role on a machine."""
    return {name: number for name, (number, _var) in PORTS[role].items()}


def port_vars(role: str, ports: dict[str, int]) -> dict[str, int]:
    """An instance's ports as the Ansible variables of its roles."""
    return {var: ports[name] for name, (_number, var) in PORTS[role].items()}


class Instance(BaseModel):
    id: str
    role: Role
    host: str  # where the control machine (Ansible, the CLI) reaches it
    ports: dict[str, int]
    provider: str
    # Where the other machines of the environment reach it (EC2: its private IP);
    # empty when that is ``host`` (local sandboxes).
    private_address: str = ""
    directory: str | None = None  # local sandboxes only
    autoscaled: bool = False

    @property
    def internal_address(self) -> str:
        """The address the environment's other machines use for it."""
        return self.private_address or self.host

    def url(self, port: str = "http") -> str:
        if self.role == "redis":
            return f"redis://{self.host}:{self.ports['redis']}"
        return f"http://{self.host}:{self.ports[port]}"
