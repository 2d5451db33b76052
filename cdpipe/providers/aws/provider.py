"""The EC2 provider: instances are EC2 machines created with boto3, found again by tags.

The environment's id (``env-<8 hex>`` unless given) is made at the first provision and
kept with the region in the state file, so two checkouts in one account never touch each
other's machines, groups or key pair (:mod:`.scope`). The tags are the record, the
state file a cache: ``refresh`` rebuilds the instances, the commit each app role runs
and `cdpipe up`'s options from one DescribeInstances (:mod:`.tag_records`). The pieces:
the network and its security groups (:mod:`.network`), the image (:mod:`.images`), the
key pair (:mod:`.key_pairs`), the instances and the wait for SSH (:mod:`.instances`),
and the proxy machine's instance profile, whose policy (:mod:`.iam_policy`) allows only
the scale path (:mod:`.scaler_profile`). boto3's standard ``AWS_ENDPOINT_URL`` /
``AWS_ENDPOINT_URL_EC2`` are honoured (tests use moto).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cdpipe import scaler
from cdpipe.config import Settings
from cdpipe.errors import CdpipeError
from cdpipe.model import (
    DASHBOARD_PORT,
    MACHINE_PATHS,
    ROLES,
    SCALER_DIR,
    SCALER_USER,
    SSH_PORT,
    Instance,
    Role,
)
from cdpipe.providers.aws import iam_policy, images, instances, key_pairs, network, tag_records
from cdpipe.providers.aws.errors import aws_error
from cdpipe.providers.aws.scaler_profile import ScalerProfile
from cdpipe.providers.aws.scope import Scope, new_environment_id, tags_of
from cdpipe.providers.base import Provider
from cdpipe.state import State


class Ec2Provider(Provider):
    name = instances.PROVIDER
    ssh_port = SSH_PORT  # where wait_for_ssh knocks

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.scope = Scope(settings)
        # The environment's own image (State.image): the AMI its instances start from.
        self.image: str = ""

    @property
    def environment(self) -> str | None:
        return self.scope.environment

    @environment.setter
    def environment(self, value: str | None) -> None:
        self.scope.environment = value

    @property
    def region(self) -> str | None:
        return self.scope.region

    @property
    def ec2(self) -> Any:
        return self.scope.ec2

    @property
    def iam(self) -> Any:
        return self.scope.iam

    def attach(self, state: State, requested: str | None = None) -> None:
        wanted = requested or self.settings.aws_environment
        source = "--env" if requested else "CDPIPE_AWS_ENVIRONMENT"
        recorded = state.environment
        if not recorded and state.provider == self.name and state.instances:
            # A state file from before ids were recorded: its instances were tagged
            # with CDPIPE_AWS_ENVIRONMENT, whose default was "prod".
            recorded = self.settings.aws_environment or "prod"
        if recorded:
            if wanted and wanted != recorded:
                raise CdpipeError(
                    f"{source} {wanted!r} is not this checkout's AWS environment "
                    f"{recorded!r} (recorded in {self.settings.state_file}); drop it, or "
                    "use another CDPIPE_HOME for another environment")
            self.environment = recorded
        else:
            self.environment = wanted
        self.image = state.image
        if state.region and state.region != self.region:
            if self.settings.aws_region:
                raise CdpipeError(
                    f"CDPIPE_AWS_REGION {self.settings.aws_region!r} is not the region of "
                    f"this checkout's AWS environment ({state.region}); unset it")
            self.scope.move_to(state.region)

    def refresh(self, state: State) -> bool:
        """Rebuilds ``state`` from AWS, the source of truth, with ONE paginated
        DescribeInstances of the environment's tags: the live (pending or running)
        instances in launch order, their roles and ``Autoscaled`` marks, and what the
        tags record (:func:`.tag_records.read_records`). Nothing tagged: no instance,
        no commit, as before any `up`. False (state untouched) when no environment id
        is known."""
        if not self.environment:
            return False
        try:
            raw = self.describe()
        except Exception as exc:
            raise aws_error(exc, "reading the environment's instances") from None
        live = instances.live(self.settings, raw)
        state.instances = [instance for instance, _ in live]
        tag_records.read_records(state, live)
        if live:
            state.environment, state.region, state.provider = (
                self.scope.env_id(), str(self.region), self.name)
            state.image = self.image = images.launched_from(raw) or state.image
        return True

    def tags(self, role: str | None = None) -> dict[str, str]:
        return self.scope.tags(role)

    # -- checks -----------------------------------------------------------------------
    def preflight(self) -> None:
        if not self.region:
            raise CdpipeError("no AWS region: set AWS_REGION or CDPIPE_AWS_REGION")
        known = self.scope.session.get_available_regions("ec2")
        if self.region not in known:
            raise CdpipeError(f"unknown AWS region {self.region!r}; use one of "
                              f"{', '.join(sorted(known)[:6])}, ...")
        try:
            self.ec2.describe_availability_zones()
        except Exception as exc:
            raise aws_error(exc, "checking access") from None

    def check_deployable(self) -> None:
        if "://" not in self.settings.app_repo and "@" not in self.settings.app_repo:
            raise CdpipeError("on AWS the machines clone the app themselves: set "
                              "CDPIPE_APP_REPO to a git URL they can reach")

    def key_pair_name(self) -> str:
        return key_pairs.key_pair_name(self.scope)

    # -- the scaler's instance profile ------------------------------------------------
    def scaler_name(self) -> str:
        return iam_policy.scaler_name(self.settings.aws_project, self.scope.env_id())

    def scaler_policy(self) -> dict[str, Any]:
        partition = self.scope.session.get_partition_for_region(str(self.region))
        owner = None if self.settings.aws_ami_ssm_parameter else self.settings.aws_ami_owner
        return iam_policy.scaler_policy(
            self.settings.aws_project, self.scope.env_id(), str(self.region),
            self.key_pair_name(), self.settings.aws_instance_type, owner,
            self.settings.aws_ami_ssm_parameter, partition, self.image or None)

    def scaler_profile(self) -> ScalerProfile:
        return ScalerProfile(self.iam, self.ec2, self.scaler_name(), self.tags(),
                             self.scaler_policy, self.show)

    def ensure_scaler_profile(self) -> str:
        return self.scaler_profile().ensure()

    def remove_scaler_profile(self) -> list[str]:
        return self.scaler_profile().remove()

    # -- instances --------------------------------------------------------------------
    def describe(self, role: str | None = None) -> list[dict[str, Any]]:
        return instances.describe(self.scope, role)

    def ensure(self, state: State, wanted: dict[Role, int],
               autoscaled: bool = False) -> list[Instance]:
        self.preflight()
        if not self.environment:
            self.environment = new_environment_id()
            self.show(f"new AWS environment {self.environment} in {self.region}")
        # Recorded before anything is created, so that what a failed call leaves (a
        # key pair, groups) is found again by the next `up` and removed by `down`.
        state.environment, state.region, state.provider = (
            self.environment, str(self.region), self.name)
        created_ids: list[str] = []
        try:
            key = key_pairs.ensure_key_pair(self.scope)
            # The scale path (the monitor, with the scaler's policy) only looks groups up
            # and needs no IAM; provision also makes the proxy's instance profile.
            groups = (network.find_groups(self.scope) if autoscaled
                      else network.ensure_groups(self.scope))
            alive = self.describe()  # one call, grouped by the Role tag
            existing = {role: [r for r in alive if tags_of(r).get("Role") == role]
                        for role in ROLES}
            missing = {role: wanted.get(role, 0) - len(existing[role]) for role in ROLES}
            # Every launch uses the environment's own image (that of its instances); a
            # new environment's is the newest that matches the settings. The scaler's
            # policy allows launches from that image only.
            self.image = images.launched_from(alive) or self.image
            if not self.image and (not autoscaled or any(n > 0 for n in missing.values())):
                self.image = images.find_ami(self.scope)
            state.image = self.image
            profile = None if autoscaled else self.ensure_scaler_profile()
            if profile:
                self.scaler_profile().attach(existing["proxy"])
            if any(n > 0 for n in missing.values()):
                ami = self.image
                for role, count in missing.items():
                    for n in range(count):
                        created_ids.append(self._launch(
                            role, ami, key, groups[network.ROLE_GROUP[role]], autoscaled,
                            number=len(existing[role]) + n + 1,
                            profile=profile if role == "proxy" else None))
                instances.wait_running(self.scope, created_ids)
            found = [instance for instance, _ in instances.live(self.settings, self.describe())]
            created = [i for i in found if i.id in created_ids]
            self.wait_for_ssh(created)
        except CdpipeError as exc:
            raise type(exc)(f"{exc}{instances.cleanup(self.scope, created_ids)}") from None
        except Exception as exc:
            note = instances.cleanup(self.scope, created_ids)
            error = aws_error(exc, "creating instances")
            raise type(error)(f"{error}{note}") from None
        state.instances = found
        return created

    def _launch(self, role: str, ami: str, key: str, group_id: str, autoscaled: bool,
                number: int, profile: str | None = None) -> str:
        args = instances.launch_request(self.scope, role, ami, key, group_id, autoscaled,
                                        number, profile)
        if profile:  # a just-made profile may look invalid to EC2 for a while
            launched = self.scaler_profile().retry(lambda: self.ec2.run_instances(**args))
        else:
            launched = self.ec2.run_instances(**args)
        return str(launched["Instances"][0]["InstanceId"])

    def wait_for_ssh(self, found: Sequence[Instance], port: int | None = None,
                     timeout: float | None = None) -> None:
        """:func:`.instances.wait_for_ssh`, bounded by CDPIPE_AWS_SSH_WAIT_SECONDS."""
        limit = self.settings.aws_ssh_wait_seconds if timeout is None else timeout
        instances.wait_for_ssh(found, limit, self.show, port or self.ssh_port)

    def user_data(self) -> str:
        return instances.user_data(self.settings)

    def terminate(self, state: State, instance: Instance) -> None:
        mine = {i["InstanceId"] for i in self.describe()}
        if instance.id not in mine:
            raise CdpipeError(f"{instance.id} does not carry this environment's tags; "
                              "refusing to terminate it")
        try:
            instances.terminate_ids(self.scope, [instance.id])
        except Exception as exc:
            raise aws_error(exc, f"terminating {instance.id}") from None
        state.instances = [i for i in state.instances if i.id != instance.id]

    def destroy_all(self, state: State) -> list[str]:
        """Terminates this environment's instances (and waits until they are gone),
        then deletes its security groups and key pair; nothing of other environments."""
        if not self.environment:
            self.show("no AWS environment is recorded here; nothing to remove (another "
                      "one: `cdpipe down --provider aws --env ID`)")
            return []
        self.preflight()
        try:
            ids = [i["InstanceId"] for i in self.describe()]
            if ids:
                self.show(f"terminating {len(ids)} instance(s) of {self.environment} "
                          "and waiting until they are gone")
            instances.terminate_ids(self.scope, ids)
            state.instances = []
            network.delete_groups(self.scope, self.show)
            key_pairs.delete_key_pairs(self.scope)
        except CdpipeError:
            raise
        except Exception as exc:
            raise aws_error(exc, "removing the environment") from None
        for what in self.remove_scaler_profile():  # once no instance holds it
            self.show(f"deleted {what}")
        return ids

    # -- records and Ansible ----------------------------------------------------------
    def check_options(self, options: dict[str, str | float | int]) -> None:
        tag_records.check_options(options)

    def record_options(self, state: State) -> None:
        tag_records.record_options(self.scope, state)

    def record_deployed(self, state: State) -> None:
        tag_records.record_deployed(self.scope, state)

    def inventory_vars(self) -> dict[str, Any]:
        return {
            "ansible_user": self.settings.aws_ssh_user,
            "ansible_ssh_private_key_file": str(
                Path(self.settings.aws_private_key_file).expanduser()),
            "ansible_become": True,
            "cdpipe_install_packages": True,
            **MACHINE_PATHS,
            # The monitor scales through the scaler on its own machine (roles/scaler).
            "scaler_environment": scaler.machine_settings(
                self.settings, self.environment or "", str(self.region or "")),
            "monitor_scale_command": scaler.scale_command(SCALER_DIR, SCALER_USER),
            "scaler_dashboard_port": DASHBOARD_PORT,
        }

    def host_vars(self, instance: Instance) -> dict[str, Any]:
        return {"ansible_host": instance.host, "cdpipe_address": instance.internal_address}
