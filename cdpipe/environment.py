"""The operations behind the CLI: provision, up, deploy and down of one environment."""

from __future__ import annotations

from collections.abc import Callable

from cdpipe import gitref, inventory, providers, secrets
from cdpipe import state as state_mod
from cdpipe.ansible_runner import PlaybookResult, run_playbook
from cdpipe.config import Settings
from cdpipe.errors import CdpipeError
from cdpipe.model import APP_ROLES, Role
from cdpipe.providers.base import Provider
from cdpipe.state import State

DEFAULT_LAYOUT: dict[Role, int] = {"proxy": 1, "redis": 1, "prod": 1, "canary": 1}
Show = Callable[[str], None]


class Environment:
    def __init__(self, settings: Settings, provider_name: str | None = None,
                 show: Show = print) -> None:
        self.settings = settings
        self.state = state_mod.load(settings.state_file)
        name = provider_name or (self.state.provider if self.state.instances
                                 else settings.provider)
        if self.state.instances and name != self.state.provider:
            raise CdpipeError(
                f"this environment runs on provider {self.state.provider!r}; "
                f"run `cdpipe down --provider {self.state.provider}` first"
            )
        self.provider: Provider = providers.get(name, settings)
        self.show = show

    def save(self) -> None:
        state_mod.save(self.settings.state_file, self.state)
        inventory.write(self.settings.inventory_file, self.state, self.provider)

    def provision(self) -> None:
        self.provider.preflight()
        secrets.ensure(self.settings.secrets_dir)
        created = self.provider.ensure(self.state, DEFAULT_LAYOUT)
        self.save()
        for instance in created:
            self.show(f"created {instance.id} ({instance.role}) at {instance.url()}")
        if not created:
            self.show("all instances exist; nothing created")

    def up(self, ref: str) -> PlaybookResult:
        self.provider.preflight()
        sha = gitref.resolve(self.settings.app_repo, ref)
        self.show(f"provisioning {self.provider.name} instances")
        self.provision()
        self.show(f"configuring with Ansible; deploying {sha[:12]} to prod and canary")
        result = self._playbook("site.yml", {"app_ref": sha})
        for role in APP_ROLES:
            self.state.deployed[role] = sha
        self.save()
        return result

    def deploy(self, ref: str, target: str | None) -> PlaybookResult:
        if target is not None and target not in APP_ROLES:
            raise CdpipeError(f"unknown target {target!r}; use --target prod or --target canary")
        if not self.state.instances:
            raise CdpipeError("no environment is up here; run `cdpipe up` first")
        sha = gitref.resolve(self.settings.app_repo, ref)
        roles = [target] if target else list(APP_ROLES)
        self.show(f"deploying {sha[:12]} to {' and '.join(roles)}")
        result = self._playbook("deploy.yml", {"app_ref": sha}, limit=",".join(roles))
        for role in roles:
            self.state.deployed[role] = sha
        self.save()
        return result

    def down(self) -> list[str]:
        removed = self.provider.destroy_all(self.state)
        self.state = State(provider=self.provider.name)
        self.save()
        return removed

    def _playbook(self, playbook: str, extra: dict[str, str],
                  limit: str | None = None) -> PlaybookResult:
        # The inventory must be current before Ansible reads it.
        self.save()
        result = run_playbook(
            playbook, self.settings.inventory_file, self.settings.logs_dir,
            extra_vars=extra, limit=limit, show=self.show,
        )
        self.show(f"{playbook}: {result.changed} changed in {result.seconds:.1f}s "
                  f"(log: {result.log_path})")
        return result
