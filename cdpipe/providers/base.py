"""The interface every place instances can live implements (local sandboxes, EC2)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from cdpipe.model import Instance, Role
from cdpipe.state import State


class Provider(ABC):
    name: str

    @abstractmethod
    def preflight(self) -> None:
        """Fail with one clear line if this provider cannot work here (missing tools...)."""

    @abstractmethod
    def ensure(self, state: State, wanted: dict[Role, int],
               autoscaled: bool = False) -> list[Instance]:
        """Create or find at least ``wanted[role]`` instances of each role, started;
        those created are marked ``autoscaled`` when the autoscaler asked for them.

        Either every missing instance is created or none is (all checks come first).
        Updates ``state`` in place and returns the instances created by this call.
        """

    @abstractmethod
    def terminate(self, state: State, instance: Instance) -> None:
        """Stop and remove one instance, leaving nothing of it running."""

    def destroy_all(self, state: State) -> list[str]:
        removed = []
        for instance in list(state.instances):
            self.terminate(state, instance)
            removed.append(instance.id)
        return removed

    def check_deployable(self) -> None:  # noqa: B027 (optional hook, nothing by default)
        """Fail with one clear line if Ansible cannot deploy through this provider."""

    @abstractmethod
    def inventory_vars(self) -> dict[str, Any]:
        """Ansible variables for every host of this provider (connection, paths...)."""

    @abstractmethod
    def host_vars(self, instance: Instance) -> dict[str, Any]:
        """Ansible variables of one host (its address, ports, directories)."""
