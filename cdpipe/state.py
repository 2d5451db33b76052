"""The environment's state file (``.cdpipe/state.json``): instances and deployed commits.

The local provider's only record. For aws a cache: AWS's tags are the record, read
again by every command (``Provider.refresh``); a workspace without this file rebuilds
it from them. Written atomically, so a command interrupted half-way never leaves a
torn file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import BaseModel, Field

from cdpipe.model import Instance, Role


class State(BaseModel):
    provider: str = "local"
    # The environment's id and region where the provider needs them (aws): every
    # command after the first provision acts on this id only. Empty in state files
    # written before they were recorded, and for the local provider.
    environment: str = ""
    region: str = ""
    instances: list[Instance] = Field(default_factory=list)
    deployed: dict[str, str] = Field(default_factory=dict)  # role -> commit
    next_slot: int = 0
    # Options given to `cdpipe up` that later runs keep (monitor interval, cooldown...).
    options: dict[str, str | float | int] = Field(default_factory=dict)
    # The machine image the environment's instances start from (aws: the AMI its first
    # instances were launched from; every later launch, a scale-out too, uses it).
    image: str = ""

    def of_role(self, role: Role) -> list[Instance]:
        return [i for i in self.instances if i.role == role]

    def get(self, instance_id: str) -> Instance | None:
        return next((i for i in self.instances if i.id == instance_id), None)


def load(path: Path) -> State:
    if not path.exists():
        return State()
    return State.model_validate_json(path.read_text(encoding="utf-8"))


def save(path: Path, state: State) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state.model_dump(), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
