"""Local provider: an instance is a sandbox directory plus its own ports on 127.0.0.1.

Sandboxes live under ``<home>/instances/<id>/``; each runs its own supervisord (see
``cdpipe.providers.local.sandbox``). Instance ``n`` of the environment owns the port block
``port_base + 10 * n`` .. ``+ 9``; the named ports of its role come first in that block.
"""

from __future__ import annotations

import shutil
import socket
import sys
from pathlib import Path
from typing import Any

from cdpipe.config import Settings
from cdpipe.errors import CdpipeError
from cdpipe.model import PORTS, ROLES, Instance, Role
from cdpipe.providers.base import Provider
from cdpipe.providers.local.sandbox import Sandbox, bin_path
from cdpipe.providers.local.sizing import Sizing
from cdpipe.state import State

HOST = "127.0.0.1"
REQUIRED_BINARIES = {
    "redis-server": "redis-server",
    "haproxy": "haproxy",
    "git": "git",
}


def port_in_use(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


class LocalProvider(Provider):
    name = "local"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.sizing = Sizing(settings)
        self.sizing.leave_sandbox()

    def preflight(self) -> None:
        for binary, package in REQUIRED_BINARIES.items():
            if shutil.which(binary) is None:
                raise CdpipeError(
                    f"{binary} not found on PATH; install it with scripts/bootstrap "
                    f"(apt-get install {package})"
                )
        self.sizing.check()

    def sandbox(self, instance: Instance) -> Sandbox:
        assert instance.directory is not None
        return Sandbox(instance.id, Path(instance.directory),
                       self.settings.run_dir / instance.id, self.sizing.group(instance.id))

    def _plan(self, state: State, role: Role, slot: int) -> Instance:
        number = 1 + max(
            (int(i.id.rsplit("-", 1)[1]) for i in state.of_role(role)), default=0
        )
        instance_id = f"{role}-{number}"
        first = self.settings.port_base + 10 * slot
        ports = {name: first + k for k, name in enumerate(PORTS[role])}
        return Instance(
            id=instance_id, role=role, host=HOST, ports=ports, provider=self.name,
            directory=str(self.settings.instances_dir / instance_id),
        )

    def ensure(self, state: State, wanted: dict[Role, int],
               autoscaled: bool = False) -> list[Instance]:
        self.preflight()
        planned: list[Instance] = []
        slot = state.next_slot
        scratch = state.model_copy(deep=True)
        for role in ROLES:
            while len(scratch.of_role(role)) < wanted.get(role, 0):
                instance = self._plan(scratch, role, slot)
                instance.autoscaled = autoscaled
                scratch.instances.append(instance)
                planned.append(instance)
                slot += 1
        # Check every port before creating anything: nothing half-created.
        for instance in planned:
            for name, port in instance.ports.items():
                if port_in_use(port):
                    raise CdpipeError(
                        f"port {port} ({instance.id} {name}) is already in use on {HOST}; "
                        "stop what holds it or pick other ports with CDPIPE_PORT_BASE=<port>"
                    )
        # Existing sandboxes whose supervisor is gone (a reboot) are started again.
        for instance in state.instances:
            self.sandbox(instance).start()
        created: list[Instance] = []
        try:
            for instance in planned:
                box = self.sandbox(instance)
                box.create()
                box.start()
                created.append(instance)
        except Exception:
            for instance in created:
                self._remove(instance)
            raise
        state.instances.extend(planned)
        state.next_slot = slot
        state.provider = self.name
        return planned

    def destroy_all(self, state: State) -> list[str]:
        removed = super().destroy_all(state)
        # The virtual environments the sandboxes shared go with the last of them.
        shutil.rmtree(self.settings.home / "venvs", ignore_errors=True)
        return removed

    def _remove(self, instance: Instance) -> None:
        box = self.sandbox(instance)
        box.stop()
        self.sizing.remove_leftover(instance.id)
        # Keep the instance's logs for a post-mortem: <home>/logs/<instance id>/.
        kept = self.settings.logs_dir / instance.id
        shutil.rmtree(kept, ignore_errors=True)
        if (box.dir / "logs").is_dir():
            shutil.copytree(box.dir / "logs", kept)
        shutil.rmtree(box.dir, ignore_errors=True)

    def terminate(self, state: State, instance: Instance) -> None:
        self._remove(instance)
        state.instances = [i for i in state.instances if i.id != instance.id]
        for role, _commit in list(state.deployed.items()):
            if not any(i.role == role for i in state.instances):
                state.deployed.pop(role, None)

    def notes(self) -> list[str]:
        return [self.sizing.note()]

    def inventory_vars(self) -> dict[str, Any]:
        return {
            "ansible_connection": "local",
            "ansible_python_interpreter": sys.executable,
            "cdpipe_install_packages": False,
            "cdpipe_bind_address": HOST,
            # Host code runs on this checkout's Python (which has its dependencies),
            # from the copy the code role ships into each sandbox.
            "cdpipe_python": sys.executable,
            "service_supervisorctl": bin_path("supervisorctl"),
            "service_supervisor_config": "{{ cdpipe_instance_dir }}/supervisord.conf",
            "service_include_dir": "{{ cdpipe_instance_dir }}/supervisor.d",
            "service_log_dir": "{{ cdpipe_instance_dir }}/logs",
            "app_python": str(Path(sys.base_prefix) / "bin" / "python3"),
            # The sandboxes share their apps' virtual environments (one per checksum of
            # the requirements), as machines made from one baked image would: a new prod
            # sandbox serves without building one.
            "app_venvs_dir": str(self.settings.home / "venvs"),
            "monitor_local_smtp": True,
            "monitor_scale_command": [bin_path("cdpipe"), "scale"],
            "monitor_control_environment": {
                "CDPIPE_HOME": str(self.settings.home),
                "CDPIPE_PORT_BASE": str(self.settings.port_base),
                "CDPIPE_APP_REPO": self.settings.app_repo,
            },
        }

    def host_vars(self, instance: Instance) -> dict[str, Any]:
        hv: dict[str, Any] = {"cdpipe_instance_dir": instance.directory,
                              "cdpipe_code_dir": f"{instance.directory}/code",
                              **self.sizing.host_vars(instance.id)}
        if instance.role == "proxy":
            hv["proxy_dir"] = f"{instance.directory}/haproxy"
            hv["proxy_controller_config"] = f"{instance.directory}/haproxy/controller.json"
            hv["proxy_deployer_config"] = f"{instance.directory}/haproxy/deployer.json"
            # Sockets go to the sandbox's short runtime directory, not under CDPIPE_HOME.
            hv["proxy_socket"] = str(self.sandbox(instance).run_dir / "haproxy.sock")
        return hv
