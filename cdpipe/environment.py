"""The operations behind the CLI: provision, up, deploy and down of one environment.

Every deploy that runs (``up``, ``deploy``, the canary's promote and rollback, the
configure of a scaled-out instance) is recorded, done or failed, at the head of
``deploy:history`` in the environment's Redis as the deployer user
(:mod:`cdpipe.deploy_record`).

Where the provider keeps the facts outside this machine (aws: the instances' tags), they
are read again whenever an Environment is made and when its lock is taken: the state
file is then a cache, and a fresh workspace (no state file) that knows the
environment's id acts on the running environment instead of making a second one.
"""

from __future__ import annotations

import fcntl
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path

from cdpipe import (
    PROJECT_ROOT,
    controls,
    deploy_record,
    env_lock,
    gitref,
    inventory,
    providers,
    redis_users,
    secret_files,
)
from cdpipe import state as state_mod
from cdpipe.ansible_runner import PlaybookResult, run_playbook
from cdpipe.config import Settings
from cdpipe.errors import CdpipeError
from cdpipe.model import APP_ROLES, Instance, Role
from cdpipe.providers.base import Provider
from cdpipe.state import State
from cdpipe_host import discovery
from cdpipe_host.keys import servers_key
from cdpipe_host.names import shown

DEFAULT_LAYOUT: dict[Role, int] = {"proxy": 1, "redis": 1, "prod": 1, "canary": 1}
Show = Callable[[str], None]
# The commands that refuse to act without the environment lock (see Environment.locked).
LOCK_REQUIRED = ("scale out", "scale in")


class Environment:
    def __init__(self, settings: Settings, provider_name: str | None = None,
                 show: Show = print, environment: str | None = None) -> None:
        """``environment``: the id the user asked for (``--env``); the provider refuses
        it when the state file records another."""
        self.settings = settings
        self.state = state_mod.load(settings.state_file)
        # An environment exists here once it has instances or a recorded id (a first
        # provision that failed half-way may have left groups to remove).
        exists = bool(self.state.instances or self.state.environment)
        name = provider_name or (self.state.provider if exists else settings.provider)
        if exists and name != self.state.provider:
            raise CdpipeError(
                f"this environment runs on provider {self.state.provider!r}; "
                f"run `cdpipe down --provider {self.state.provider}` first"
            )
        self.provider: Provider = providers.get(name, settings)
        self.provider.show = show
        self.requested_environment = environment
        self.provider.attach(self.state, environment)
        self.show = show
        self.env_lock: env_lock.EnvironmentLock | None = None
        self.refresh()

    def refresh(self) -> None:
        """The state as the provider records it (aws: one DescribeInstances), saved as
        this workspace's cache when it changed; one line when there was no state file."""
        had_file = self.settings.state_file.exists()
        before = self.state.model_dump()
        if self.provider.refresh(self.state):
            if not had_file and self.state.instances:
                self.show(f"no state here: rebuilt environment {self.state.environment} "
                          f"({self.state.region}) from AWS tags: "
                          f"{len(self.state.instances)} instances")
            if self.state.model_dump() != before:
                self.save()
        self._seen = self._stamp()

    def _stamp(self) -> tuple[int, int] | None:
        try:
            stat = self.settings.state_file.stat()
        except FileNotFoundError:
            return None
        return stat.st_mtime_ns, stat.st_size

    @contextmanager
    def locked(self, command: str) -> Iterator[None]:
        """One state-changing command at a time, ``command`` naming it ("deploy",
        "scale out"...). Two locks, in this order:

        - the flock of ``<CDPIPE_HOME>/.lock``: commands sharing this checkout (the
          state is read again once it is held);
        - the environment lock in the environment's Redis (``cdpipe.env_lock``): actors
          on other machines, which share only that Redis (a Jenkins deploy, the
          monitor's scale-out on the proxy machine). Taken when the state knows a Redis
          instance; a brand-new environment has none, and nothing else can act on it
          yet, so none is taken.

        When that Redis does not answer (down, or out of reach: on AWS only the proxy
        and app machines reach it), ``scale out`` and ``scale in`` refuse with one line
        and change nothing: they need Redis anyway (the server list) and would stop
        half-way, and refusing means that an actor that goes on without the lock
        cannot interleave with a scale. ``up`` (which repairs Redis), ``provision``,
        ``deploy`` and ``down`` (which removes Redis: best effort) go on without it,
        saying so in one line.

        Once both are held the state is read again (file and provider) when either
        lock had to wait or the file changed since this object last saw it; otherwise
        the refresh of ``__init__`` is current (one DescribeInstances per command).
        """
        self.settings.home.mkdir(parents=True, exist_ok=True)
        with (self.settings.home / ".lock").open("w") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                waited = False
            except BlockingIOError:
                fcntl.flock(fh, fcntl.LOCK_EX)
                waited = True
            if waited or self._stamp() != self._seen:
                self._reload()
            with self._environment_lock(command):
                if self.env_lock is not None and self.env_lock.waited:
                    self._reload()  # an actor elsewhere acted meanwhile
                yield

    def reread(self) -> None:
        """The state as the file and the provider hold it now (another command, or the
        monitor's scale action, may have changed it): what a long-running reader such as
        the dashboard calls."""
        self._reload()

    def _reload(self) -> None:
        self.state = state_mod.load(self.settings.state_file)
        self.provider.attach(self.state, self.requested_environment)
        self.refresh()

    @contextmanager
    def _environment_lock(self, command: str) -> Iterator[None]:
        servers = self.state.of_role("redis")
        if not servers:
            yield
            return
        where = f"{servers[0].host}:{servers[0].ports['redis']}"
        r = controls.client(self.settings, self.state, user=redis_users.DEPLOYER)
        with ExitStack() as stack:
            try:
                self.env_lock = stack.enter_context(env_lock.held(r, command, self.show))
            except controls.redis.RedisError as exc:
                refused = (controls.redis.AuthenticationError,
                           controls.redis.exceptions.NoPermissionError)
                problem = (f"Redis at {where} refused the {redis_users.DEPLOYER} user "
                           f"({exc}); `cdpipe up` installs its password and rules"
                           if isinstance(exc, refused) else
                           f"Redis at {where} does not answer ({exc})")
                if command in LOCK_REQUIRED:
                    raise CdpipeError(f"cannot take the environment lock: {problem}; "
                                      f"nothing was changed; check `cdpipe status`") from None
                self.show(f"environment lock not taken: {problem}; {command} goes on")
            try:
                yield
            finally:
                self.env_lock = None

    def resolve(self, ref: str) -> str:
        """The full SHA of ref: in the source repository when it is a local path, else
        (a URL, on AWS) in this checkout, which is what Jenkins built and tested."""
        repo = self.settings.app_repo
        return gitref.resolve(repo if Path(repo).exists() else str(PROJECT_ROOT), ref)

    def save(self) -> None:
        state_mod.save(self.settings.state_file, self.state)
        inventory.write(self.settings.inventory_file, self.settings, self.state,
                        self.provider)

    def provision(self, needed: Iterable[str] = ()) -> None:
        """Creates what is missing. Secrets are generated only for a new environment
        (no instance yet); one that exists gets ``needed`` (what the caller's playbook
        reads) from files or CDPIPE_<NAME>, never new ones."""
        self.provider.preflight()
        if self.state.instances:
            secret_files.require(self.settings.secrets_dir, needed)
        else:
            secret_files.ensure(self.settings.secrets_dir)
        recorded = self.state.environment
        try:
            created = self.provider.ensure(self.state, DEFAULT_LAYOUT)
        except CdpipeError:
            if self.state.environment != recorded:
                # Keep the new environment's id the provider recorded before it failed:
                # the next `up` goes on with it, `down` removes what it left (groups).
                state_mod.save(self.settings.state_file, self.state)
            raise
        self.save()
        for line in self.provider.notes():
            self.show(line)
        for instance in created:
            self.show(f"created {instance.id} ({instance.role}) at {instance.url()}")
        if not created:
            self.show("all instances exist; nothing created")

    def up(self, ref: str, options: dict[str, str | float | int] | None = None
           ) -> PlaybookResult:
        self.provider.preflight()
        sha = self.resolve(ref)
        self.provider.check_options(options or {})
        with self.locked("up"):
            self.state.options.update(options or {})
            self.show(f"provisioning {self.provider.name} instances")
            self.provision(secret_files.ALL)  # site.yml configures every role
            self.provider.record_options(self.state)
            with deploy_record.recorded(self.deployer_client, self.show, "up", ref, sha, APP_ROLES):
                self.show(f"configuring with Ansible; deploying {sha[:12]} to prod and "
                          "canary")
                extra: dict[str, str | bool] = {"app_ref": sha}
                if not self.state.deployed:
                    # Nothing serves yet: no server to keep in rotation, deploy all at
                    # once, and drain none (an up that failed half-way may have
                    # registered some).
                    extra |= {"app_deploy_batch": "100%", "app_drain": False}
                result = self._playbook("site.yml", extra)
                for role in APP_ROLES:
                    self.state.deployed[role] = sha
                self._record_deployed()
                return result

    def deploy(self, ref: str, target: str | None, command: str = "deploy",
               stop_on_canary_alert: bool = False) -> PlaybookResult:
        """Deploys ``ref`` to ``target`` (None: prod and canary); ``command`` names the
        operation in the deploy history ("deploy", "canary promote"...);
        ``stop_on_canary_alert``: stop before the next server once the alert is on."""
        with self.locked("deploy"):
            return self._deploy(ref, target, command, stop_on_canary_alert)

    def _deploy(self, ref: str, target: str | None, command: str,
                stop_on_canary_alert: bool = False) -> PlaybookResult:
        if target is not None and target not in APP_ROLES:
            raise CdpipeError(f"unknown target {shown(target)}; use --target prod or "
                              "--target canary")
        if not self.state.instances:
            raise CdpipeError("no environment is up here; run `cdpipe up` first")
        secret_files.require(self.settings.secrets_dir, secret_files.DEPLOY + secret_files.LOCK)
        sha = self.resolve(ref)
        roles = [target] if target else list(APP_ROLES)
        with deploy_record.recorded(self.deployer_client, self.show, command, ref, sha, roles):
            self.show(f"deploying {sha[:12]} to {' and '.join(roles)}")
            result = self._playbook(
                "deploy.yml", {"app_ref": sha, "app_stop_on_canary_alert": stop_on_canary_alert},
                limit=",".join(roles))
            for role in roles:
                self.state.deployed[role] = sha
            self._record_deployed()
            return result

    def deployer_client(self) -> controls.redis.Redis:
        """The deployer user's client of the environment's Redis (the deploy history)."""
        if not self.state.of_role("redis"):
            raise CdpipeError("the environment has no Redis instance")
        return controls.client(self.settings, self.state, user=redis_users.DEPLOYER)

    def _record_deployed(self) -> None:
        """Saves the deployed commits, then has the provider record them (EC2: tags)."""
        self.save()
        self.provider.record_deployed(self.state)

    def down(self) -> list[str]:
        with self.locked("down"):
            try:
                removed = self.provider.destroy_all(self.state)
            except CdpipeError:
                if self.env_lock is not None and not self.state.of_role("redis"):
                    self.env_lock.forget()  # its Redis is gone (a failure after it)
                self.save()  # what is gone already (terminated instances) stays gone
                raise
            if self.env_lock is not None:
                self.env_lock.forget()  # the lock went with the environment's Redis
            self.state = State(provider=self.provider.name)
            self.save()
            return removed

    def scale_out(self, max_count: int) -> str | None:
        """One more prod instance serving prod's commit; None at the maximum."""
        with self.locked("scale out"):
            prod = self.state.of_role("prod")
            commit = self.state.deployed.get("prod")
            if not prod or not commit:
                raise CdpipeError("no environment is up here; run `cdpipe up` first")
            if len(prod) >= max_count:
                return None
            # scale.yml reads the deploy secrets; the lock is the deployer's.
            secret_files.require(self.settings.secrets_dir, secret_files.DEPLOY + secret_files.LOCK)
            created = self.provider.ensure(self.state, {"prod": len(prod) + 1},
                                           autoscaled=True)
            self.save()
            new = created[0]
            self.show(f"created {new.id} at {new.url()}; deploying {commit[:12]}")
            with deploy_record.recorded(self.deployer_client, self.show, "scale out", commit,
                                        commit, ["prod"], instance=new.id):
                return self._configure_new(new, commit)

    def _configure_new(self, new: Instance, commit: str) -> str:
        """Configures a scaled-out instance; on failure removes it (see scale_out)."""
        try:
            self._playbook("scale.yml", {"app_ref": commit}, limit=new.id)
        except CdpipeError as failure:
            # Nothing half-done stays: the instance goes, the server list is as it was
            # (and a Redis error on the way neither keeps it nor hides the failure).
            # The line says first what became of the instance (the monitor mails it).
            try:
                self._unregister(new.id)
            except CdpipeError as exc:
                self.show(f"{new.id}: could not leave {servers_key('prod')} ({exc})")
            try:
                self.provider.terminate(self.state, new)
            except CdpipeError as exc:
                self.save()
                raise CdpipeError(f"{new.id} did not become healthy and could NOT be "
                                  f"terminated ({exc}); remove it by hand. Why: "
                                  f"{failure}") from None
            self.save()
            raise CdpipeError(f"{new.id} did not become healthy: taken out of "
                              f"{servers_key('prod')} and terminated. Why: "
                              f"{failure}") from None
        self._record_deployed()
        return f"scaled out: {new.id} ({new.host}:{new.ports['http']}) serves {commit[:12]}"

    def scale_in(self, wait_seconds: float = 120) -> str | None:
        """Drains and removes the newest autoscaled prod instance; None if there is none."""
        with self.locked("scale in"):
            autoscaled = [i for i in self.state.of_role("prod") if i.autoscaled]
            if not autoscaled:
                return None
            secret_files.require(self.settings.secrets_dir, secret_files.SCALE_IN)
            victim = autoscaled[-1]
            self._unregister(victim.id)
            self.show(f"draining {victim.id}")
            deadline = time.monotonic() + wait_seconds
            while victim.id in controls.backend_stats(self.settings, self.state):
                if time.monotonic() > deadline:
                    raise CdpipeError(f"{victim.id} still has connections after "
                                      f"{wait_seconds:.0f}s; it stays out of rotation")
                time.sleep(0.2)
            self.provider.terminate(self.state, victim)
            self.save()
            return f"scaled in: {victim.id} drained and removed"

    def _unregister(self, instance_id: str) -> None:
        # The server lists are the deployer user's (the operator may not write them).
        r = controls.client(self.settings, self.state, user=redis_users.DEPLOYER)
        try:
            discovery.deregister(r, "prod", instance_id)
        except discovery.DrainRefused as exc:
            raise CdpipeError(str(exc)) from None
        except controls.redis.RedisError as exc:
            raise CdpipeError(f"cannot update {servers_key('prod')}: {exc}") from None

    def _playbook(self, playbook: str, extra: Mapping[str, str | bool],
                  limit: str | None = None) -> PlaybookResult:
        self.provider.check_deployable()
        # The inventory must be current before Ansible reads it.
        self.save()
        result = run_playbook(
            playbook, self.settings.inventory_file, self.settings.logs_dir,
            extra_vars=extra, limit=limit, show=self.show,
        )
        self.show(f"{playbook}: {result.changed} changed in {result.seconds:.1f}s "
                  f"(log: {result.log_path})")
        return result
