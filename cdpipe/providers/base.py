"""The interface every place instances can live implements (local sandboxes, EC2)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from cdpipe.errors import CdpipeError
from cdpipe.model import Instance, Role
from cdpipe.state import State


class Provider(ABC):
    name: str
    # Where progress lines of long waits go; the Environment gives its own. (A builtin
    # function is not bound as a method, so the default prints the line.)
    show: Callable[[str], None] = print

    def attach(self, state: State, requested: str | None = None) -> None:
        """Act, from now on, on the environment ``state`` records (EC2: its id and
        region); ``requested`` is the id the user asked for (``--env``), refused with
        one line when the state records another. The local provider's environment is
        its checkout (CDPIPE_HOME), so it takes no id."""
        if requested:
            raise CdpipeError(f"--env is for --provider aws; the {self.name} provider's "
                              "environment is this checkout's CDPIPE_HOME")

    def refresh(self, state: State) -> bool:
        """Make ``state`` what the provider itself records, where it keeps the facts
        outside this machine (EC2: the instances' tags), and say whether it did. The
        local provider's state file is its only record: nothing to read (False)."""
        return False

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

    def record_deployed(self, state: State) -> None:  # noqa: B027 (optional hook)
        """After a successful deploy: record ``state.deployed`` (role -> commit) where
        other machines find it (EC2: a ``Commit`` tag on each app instance). Nothing by
        default: the state file is the record."""

    def check_options(self, options: dict[str, str | float | int]) -> None:  # noqa: B027
        """Fail with one line if ``options`` (`cdpipe up`'s) cannot be recorded."""

    def record_options(self, state: State) -> None:  # noqa: B027 (optional hook)
        """Record ``state.options`` where other machines find them (EC2: tags of the
        proxy). Nothing by default: the state file is the record."""

    def notes(self) -> list[str]:
        """Lines worth a user's notice when instances are provisioned (none by default)."""
        return []

    @abstractmethod
    def inventory_vars(self) -> dict[str, Any]:
        """Ansible variables for every host of this provider (connection, paths...)."""

    @abstractmethod
    def host_vars(self, instance: Instance) -> dict[str, Any]:
        """Ansible variables of one host (its address, ports, directories)."""
