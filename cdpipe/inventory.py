"""The Ansible inventory of an environment, written to ``<home>/inventory.yml``.

Groups are the roles (proxy, redis, prod, canary); the commit deployed to each app role
is its ``app_ref`` group variable, so ``ansible-playbook -i <file> playbooks/site.yml``
from a laptop converges to what is running.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from cdpipe.model import ROLES
from cdpipe.providers.base import Provider
from cdpipe.state import State


def build(state: State, provider: Provider) -> dict[str, Any]:
    children: dict[str, Any] = {}
    for role in ROLES:
        hosts = {i.id: provider.host_vars(i) for i in state.of_role(role)}
        group: dict[str, Any] = {"hosts": hosts}
        if role in state.deployed:
            group["vars"] = {"app_ref": state.deployed[role]}
        children[role] = group
    all_vars = provider.inventory_vars() | dict(state.options)
    return {"all": {"vars": all_vars, "children": children}}


def write(path: Path, state: State, provider: Provider) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "# Written by cdpipe; rewritten by `cdpipe up` and `cdpipe deploy`.\n"
    text += yaml.safe_dump(build(state, provider), sort_keys=False)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path
