"""The Ansible inventory of an environment, written to ``<home>/inventory.yml``.

Groups are the roles (proxy, redis, prod, canary); the commit deployed to each app role
is its ``app_ref`` group variable, so ``ansible-playbook -i <file> playbooks/site.yml``
from a laptop converges to what is running.

The cross-host facts every role reads are emitted here, once, from Python: each host's
ports (``cdpipe.model.PORTS``), the environment's Redis (``cdpipe_redis_url``), the
HAProxy backend, the canary's initial weight. The provider adds what differs
(connection, directories, whether packages are installed).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from cdpipe.config import Settings
from cdpipe.model import ROLES, Instance, port_vars
from cdpipe.providers.base import Provider
from cdpipe.runtime_control import REDIS_USER
from cdpipe.state import State
from cdpipe_host.edge import PUBLIC_HEALTH_PATH, PUBLIC_PATHS
from cdpipe_host.haproxy import APP_BACKEND

# The password is read on the control machine from the secrets directory, never written
# into the inventory; the URL percent-encodes it as format_redis_url does.
REDIS_PASSWORD_LOOKUP = (
    "{{ lookup('ansible.builtin.file', cdpipe_secrets_dir ~ '/redis_password') }}")
REDIS_URL_TEMPLATE = (
    "redis://" + REDIS_USER
    + ":{{ cdpipe_redis_password | urlencode | replace('/', '%2F') }}"
    "@{{ cdpipe_redis_host }}:{{ cdpipe_redis_port }}/0"
)


def host_vars(instance: Instance, provider: Provider) -> dict[str, Any]:
    return {"cdpipe_instance_id": instance.id, "cdpipe_address": instance.internal_address,
            **port_vars(instance.role, instance.ports), **provider.host_vars(instance)}


def common_vars(settings: Settings, state: State, provider: Provider) -> dict[str, Any]:
    facts: dict[str, Any] = {
        "cdpipe_provider": provider.name,
        "cdpipe_secrets_dir": str(settings.secrets_dir),
        "cdpipe_redis_password": REDIS_PASSWORD_LOOKUP,
        "cdpipe_redis_url": REDIS_URL_TEMPLATE,
        "app_repo": settings.app_repo,
        "app_keep_releases": settings.keep_releases,
        # The path of the key, never the key: the app role copies it without logging.
        "app_deploy_key_file": (str(settings.app_deploy_key_file.expanduser())
                                if settings.app_deploy_key_file else ""),
        "proxy_backend": APP_BACKEND,
        "proxy_canary_weight": settings.canary_weight,
        "proxy_public_paths": list(PUBLIC_PATHS),
        "proxy_public_health_path": PUBLIC_HEALTH_PATH,
    }
    redis_servers = state.of_role("redis")
    if redis_servers:
        facts["cdpipe_redis_host"] = redis_servers[0].internal_address
        facts["cdpipe_redis_port"] = redis_servers[0].ports["redis"]
    return facts


def build(settings: Settings, state: State, provider: Provider) -> dict[str, Any]:
    children: dict[str, Any] = {}
    for role in ROLES:
        hosts = {i.id: host_vars(i, provider) for i in state.of_role(role)}
        group: dict[str, Any] = {"hosts": hosts}
        if role in state.deployed:
            group["vars"] = {"app_ref": state.deployed[role]}
        children[role] = group
    all_vars = (common_vars(settings, state, provider) | provider.inventory_vars()
                | dict(state.options))
    return {"all": {"vars": all_vars, "children": children}}


def write(path: Path, settings: Settings, state: State, provider: Provider) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "# Written by cdpipe; rewritten by `cdpipe up` and `cdpipe deploy`.\n"
    text += yaml.safe_dump(build(settings, state, provider), sort_keys=False)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path
