"""The Ansible inventory of an environment, written to ``<home>/inventory.yml``.

Groups are the roles (proxy, redis, prod, canary); the commit deployed to each app role
is its ``app_ref`` group variable, so ``ansible-playbook -i <file> playbooks/site.yml``
from a laptop converges to what is running.

The cross-host facts every role reads are emitted here, once, from Python: each host's
ports (``cdpipe.model.PORTS``), the environment's Redis (``cdpipe_redis_urls``: one
URL per Redis user, and ``cdpipe_redis_passwords``), the
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
from cdpipe.redis_users import USERS, password_name
from cdpipe.state import State
from cdpipe_host.edge import PUBLIC_HEALTH_PATH, PUBLIC_PATHS
from cdpipe_host.haproxy import APP_BACKEND


def redis_password_lookup(user: str) -> str:
    """A password is read on the control machine from the secrets directory, never
    written into the inventory."""
    return ("{{ lookup('ansible.builtin.file', cdpipe_secrets_dir ~ '/"
            + password_name(user) + "') }}")


def redis_url_template(user: str) -> str:
    """The user's URL, its password percent-encoded as format_redis_url does it."""
    return ("redis://" + user + ":{{ cdpipe_redis_passwords['" + user + "']"
            " | urlencode | replace('/', '%2F') }}"
            "@{{ cdpipe_redis_host }}:{{ cdpipe_redis_port }}/0")


# Every Redis user's password and URL (roles pick theirs: app_redis_url is the app
# user's, proxy_redis_url the controller's...).
REDIS_PASSWORDS = {user: redis_password_lookup(user) for user in USERS}
REDIS_URLS = {user: redis_url_template(user) for user in USERS}


def host_vars(instance: Instance, provider: Provider) -> dict[str, Any]:
    return {"cdpipe_instance_id": instance.id, "cdpipe_address": instance.internal_address,
            **port_vars(instance.role, instance.ports), **provider.host_vars(instance)}


def common_vars(settings: Settings, state: State, provider: Provider) -> dict[str, Any]:
    facts: dict[str, Any] = {
        "cdpipe_provider": provider.name,
        "cdpipe_secrets_dir": str(settings.secrets_dir),
        "cdpipe_redis_passwords": REDIS_PASSWORDS,
        "cdpipe_redis_urls": REDIS_URLS,
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


def mail_vars(settings: Settings) -> dict[str, Any]:
    """The monitor's SMTP relay when CDPIPE_SMTP_HOST names one (the local sink is then
    not run); nothing otherwise. The password never goes here: the monitor role reads
    it on the control machine (secrets directory's smtp_password, else
    CDPIPE_SMTP_PASSWORD)."""
    if not settings.smtp_host:
        return {}
    facts: dict[str, Any] = {
        "monitor_local_smtp": False,
        "monitor_smtp_host": settings.smtp_host,
        "monitor_smtp_port": settings.smtp_port,
        "monitor_smtp_security": settings.smtp_security,
        "monitor_smtp_user": settings.smtp_user or "",
        "monitor_smtp_ca_file": (str(Path(settings.smtp_ca_file).resolve())
                                 if settings.smtp_ca_file else ""),
    }
    if settings.mail_from:
        facts["monitor_mail_from"] = settings.mail_from
    if settings.mail_recipients:
        facts["monitor_mail_to"] = settings.mail_recipients
    return facts


def build(settings: Settings, state: State, provider: Provider) -> dict[str, Any]:
    children: dict[str, Any] = {}
    mail = mail_vars(settings)
    for role in ROLES:
        hosts = {i.id: host_vars(i, provider) for i in state.of_role(role)}
        if mail:  # the relay's port, not the local sink's (host variables win)
            for hv in hosts.values():
                hv.pop("monitor_smtp_port", None)
        group: dict[str, Any] = {"hosts": hosts}
        if role in state.deployed:
            group["vars"] = {"app_ref": state.deployed[role]}
        children[role] = group
    all_vars = (common_vars(settings, state, provider) | provider.inventory_vars()
                | mail | dict(state.options))
    return {"all": {"vars": all_vars, "children": children}}


def write(path: Path, settings: Settings, state: State, provider: Provider) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "# Written by cdpipe; rewritten by `cdpipe up` and `cdpipe deploy`.\n"
    text += yaml.safe_dump(build(settings, state, provider), sort_keys=False)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path
