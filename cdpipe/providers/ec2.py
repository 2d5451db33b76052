"""EC2 provider: instances are EC2 machines created with boto3, found again by tags.

Everything it creates carries the tags ``Project``, ``Environment`` and ``Role`` (plus
``ManagedBy=cdpipe``); it finds, and ever terminates or deletes, only what carries this
environment's tags. The environment's id (``env-<8 hex>`` unless given) is made at the
first provision and kept with the region in the state file, so two checkouts in one
account never touch each other's machines, groups or key pair. The tags are the record,
the state file a cache: ``refresh`` rebuilds the instances, the commit each app role
runs (``Commit``) and `cdpipe up`'s options (``cdpipe:option:<name>`` on the proxy) from
one DescribeInstances, so any workspace that knows the id sees the same environment.
Least-privilege security groups: proxy (HTTP from anywhere, SSH and the stats page
from the admin CIDR), app (its port only from the proxy's group, which also runs the
monitor), redis (its port only from the groups that use it). An instance's ``host`` is
its public or private IP (CDPIPE_AWS_ADDRESS: what the control machine can reach);
``private_address`` is what the other machines use. boto3's standard
``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_EC2`` are honoured (tests use moto). The
proxy machine, whose monitor scales prod, gets its credentials from the instance
profile ``<project>-<environment>-scaler``, whose policy
(:mod:`cdpipe.providers.iam_policy`) allows only the scale path.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import socket
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
import yaml
from botocore.config import Config

from cdpipe import scaler
from cdpipe.config import Settings
from cdpipe.errors import CdpipeError
from cdpipe.model import (
    APP_ROLES,
    DASHBOARD_PORT,
    ROLES,
    SSH_PORT,
    Instance,
    Role,
    machine_ports,
)
from cdpipe.providers import iam_policy
from cdpipe.providers.aws_backoff import retry_with_backoff
from cdpipe.providers.aws_errors import aws_error, error_code
from cdpipe.providers.base import Provider
from cdpipe.providers.scaler_profile import ScalerProfile
from cdpipe.state import State

PROXY_PORTS, REDIS_PORTS, APP_PORTS = (machine_ports(r) for r in ("proxy", "redis", "prod"))
GROUPS = ("proxy", "app", "redis")
ROLE_GROUP = {"proxy": "proxy", "redis": "redis", "prod": "app", "canary": "app"}
INSTANCE_DIR = "/opt/cdpipe"  # where everything cdpipe puts on a machine lives
SCALER_DIR, SCALER_USER = f"{INSTANCE_DIR}/scaler", "cdpipe-scaler"  # roles/scaler
ALIVE = ["pending", "running", "stopping", "stopped"]
COMMIT_TAG = "Commit"  # the commit an app instance runs; inventory/aws_ec2.yml reads it
# `cdpipe up`'s options (state.options) live as tags of the proxy instance, so a fresh
# workspace reads them back; a tag value holds at most 256 characters.
OPTION_TAG_PREFIX = "cdpipe:option:"
TAG_VALUE_LIMIT = 256
# Deleting a security group right after its instances terminated: AWS answers
# DependencyViolation until their network interfaces are gone; retried with backoff
# (aws_backoff).
SSH_PROBE_SECONDS = 3.0  # one connection attempt while waiting for SSH
SSH_NOTE_EVERY = 30.0    # a progress line this often while waiting


def new_environment_id() -> str:
    return f"env-{secrets.token_hex(4)}"


def option_value(text: str) -> str | float | int:
    """An option's tag value back as the option: an int or a float when it reads as
    one (what `cdpipe up` records: seconds, and the rules file's absolute path)."""
    if re.fullmatch(r"-?[0-9]+", text):
        return int(text)
    if re.fullmatch(r"-?[0-9]*\.[0-9]+(e[-+]?[0-9]+)?|-?[0-9]+e[-+]?[0-9]+|-?[0-9]+\.", text):
        return float(text)
    return text


def majority_commit(commits: Sequence[str]) -> str:
    """The commit of a role whose instances disagree (a deploy or scale-out cut short):
    the one most of them run, a tie going to the commit of the most recently launched
    instance (``commits``: one per instance, oldest launch first)."""
    count = Counter(commits)
    last = {commit: index for index, commit in enumerate(commits)}
    return max(count, key=lambda commit: (count[commit], last[commit]))


def _tags(raw: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in raw.get("Tags", [])}


def ssh_answers(host: str, port: int, timeout: float) -> bool:
    """Whether an SSH server answers at host:port with its banner within ``timeout``."""
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            data = b""
            while len(data) < 4:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                sock.settimeout(remaining)
                chunk = sock.recv(256)
                if not chunk:
                    return False
                data += chunk
            return data.startswith(b"SSH-")
    except OSError:
        return False


def _tag(raw: dict[str, Any], key: str) -> str | None:
    return next((t["Value"] for t in raw.get("Tags", []) if t["Key"] == key), None)


class Ec2Provider(Provider):
    name = "aws"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._ec2: Any = None
        self._iam: Any = None
        session = boto3.session.Session()
        self.region = (settings.aws_region or os.environ.get("AWS_REGION")
                       or session.region_name)
        self.session = session
        # The environment acted on: attach() takes it from the state; ensure() makes
        # one at the first provision when none is recorded or asked for.
        self.environment: str | None = settings.aws_environment

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
        if state.region and state.region != self.region:
            if self.settings.aws_region:
                raise CdpipeError(
                    f"CDPIPE_AWS_REGION {self.settings.aws_region!r} is not the region of "
                    f"this checkout's AWS environment ({state.region}); unset it")
            self.region = state.region
            self._ec2 = None

    def refresh(self, state: State) -> bool:
        """Rebuilds ``state`` from AWS, the source of truth, with ONE paginated
        DescribeInstances of the environment's tags: the live (pending or running)
        instances in launch order, their roles and ``Autoscaled`` marks; the commit of
        each app role from its instances' ``Commit`` tags (disagreeing instances, e.g. a
        deploy cut short: the commit most run, a tie to the newest launch; a role with
        no tag has no commit); the options from the proxy's ``cdpipe:option:*`` tags
        (over those of the state file). Nothing tagged: no instance, no commit, as
        before any `up`. False (state untouched) when no environment id is known."""
        if not self.environment:
            return False
        try:
            raw = self.describe()
        except Exception as exc:
            raise aws_error(exc, "reading the environment's instances") from None
        live = self._live(raw)
        state.instances = [instance for instance, _ in live]
        runs: dict[str, list[str]] = {}  # role -> its instances' commits, launch order
        for instance, desc in live:
            tags = _tags(desc)
            if instance.role in APP_ROLES and tags.get(COMMIT_TAG):
                runs.setdefault(instance.role, []).append(tags[COMMIT_TAG])
            if instance.role == "proxy":
                state.options.update({k.removeprefix(OPTION_TAG_PREFIX): option_value(v)
                                      for k, v in tags.items()
                                      if k.startswith(OPTION_TAG_PREFIX)})
        state.deployed = {role: majority_commit(runs[role]) for role in ROLES if role in runs}
        if live:
            state.environment, state.region, state.provider = (
                self._env_id(), str(self.region), self.name)
        return True

    def _live(self, raw: list[dict[str, Any]]) -> list[tuple[Instance, dict[str, Any]]]:
        """The pending and running instances among ``raw`` with a role, oldest launch
        first (a pending one not yet given its address is left for the next look)."""
        found = []  # sorted() is stable: one second's launches keep AWS's order
        for desc in sorted(raw, key=lambda d: str(d.get("LaunchTime", ""))):
            state = desc["State"]["Name"]
            if state not in ("pending", "running") or _tags(desc).get("Role") not in ROLES:
                continue
            try:
                found.append((self._instance(desc), desc))
            except CdpipeError:
                if state == "running":
                    raise
        return found

    # -- plumbing ---------------------------------------------------------------------
    @property
    def ec2(self) -> Any:
        if self._ec2 is None:
            self._ec2 = self.session.client(
                "ec2", region_name=self.region,
                config=Config(retries={"max_attempts": 5, "mode": "standard"}))
        return self._ec2

    @property
    def iam(self) -> Any:
        if self._iam is None:
            self._iam = self.session.client(
                "iam", config=Config(retries={"max_attempts": 5, "mode": "standard"}))
        return self._iam

    def _env_id(self) -> str:
        if not self.environment:  # a guard: never select by tags without the id
            raise CdpipeError("no AWS environment is selected; run `cdpipe provision "
                              "--provider aws` or pass --env ID")
        return self.environment

    def _prefix(self) -> str:
        return f"{self.settings.aws_project}-{self._env_id()}"

    def tags(self, role: str | None = None) -> dict[str, str]:
        tags = {"Project": self.settings.aws_project,
                "Environment": self._env_id(), "ManagedBy": "cdpipe"}
        tags |= self.settings.aws_extra_tags
        if role:
            tags["Role"] = role
        return tags

    def _filters(self, role: str | None = None) -> list[dict[str, Any]]:
        return [{"Name": f"tag:{k}", "Values": [v]} for k, v in self.tags(role).items()
                if k in ("Project", "Environment", "ManagedBy", "Role")]

    @staticmethod
    def _tag_spec(kind: str, tags: dict[str, str]) -> list[dict[str, Any]]:
        return [{"ResourceType": kind, "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]

    # -- checks -----------------------------------------------------------------------
    def preflight(self) -> None:
        if not self.region:
            raise CdpipeError("no AWS region: set AWS_REGION or CDPIPE_AWS_REGION")
        known = self.session.get_available_regions("ec2")
        if self.region not in known:
            raise CdpipeError(f"unknown AWS region {self.region!r}; use one of "
                              f"{', '.join(sorted(known)[:6])}, ...")
        try:
            self.ec2.describe_availability_zones()
        except Exception as exc:
            raise aws_error(exc, "checking access") from None

    def _admin_cidr(self) -> str:
        cidr = self.settings.aws_admin_cidr
        if not cidr:
            raise CdpipeError("set CDPIPE_AWS_ADMIN_CIDR (e.g. 203.0.113.7/32): SSH and the "
                              "stats page are open only to it")
        try:
            net = ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise CdpipeError(f"CDPIPE_AWS_ADMIN_CIDR {cidr!r} is not a CIDR") from None
        if net.prefixlen == 0:
            raise CdpipeError("CDPIPE_AWS_ADMIN_CIDR must not be the whole internet")
        return str(net)

    def find_ami(self) -> str:
        try:
            if self.settings.aws_ami_ssm_parameter:
                ssm = self.session.client("ssm", region_name=self.region)
                return str(ssm.get_parameter(Name=self.settings.aws_ami_ssm_parameter)
                           ["Parameter"]["Value"])
            images = self.ec2.describe_images(
                Owners=[self.settings.aws_ami_owner],
                Filters=[{"Name": "name", "Values": [self.settings.aws_ami_name_filter]},
                         {"Name": "state", "Values": ["available"]}])["Images"]
        except Exception as exc:
            raise aws_error(exc, "looking up the AMI") from None
        if not images:
            raise CdpipeError(
                f"no AMI named {self.settings.aws_ami_name_filter!r} owned by "
                f"{self.settings.aws_ami_owner} in {self.region}; set "
                "CDPIPE_AWS_AMI_NAME_FILTER or CDPIPE_AWS_AMI_SSM_PARAMETER")
        return str(max(images, key=lambda i: i.get("CreationDate", ""))["ImageId"])

    # -- key pair and groups ----------------------------------------------------------
    def key_pair_name(self) -> str:
        return self.settings.aws_key_name or self._prefix()

    def ensure_key_pair(self) -> str:
        """The environment's key pair: CDPIPE_AWS_KEY_NAME as it is, else
        ``<project>-<environment>``, imported from the public key and tagged (so
        ``down`` deletes it with the environment)."""
        name = self.key_pair_name()
        found = self.ec2.describe_key_pairs(
            Filters=[{"Name": "key-name", "Values": [name]}])["KeyPairs"]
        if found:
            return name
        if self.settings.aws_key_name:
            raise CdpipeError(f"key pair {name!r} (CDPIPE_AWS_KEY_NAME) not found in "
                              f"{self.region}; create it, or unset CDPIPE_AWS_KEY_NAME to "
                              "import CDPIPE_AWS_PUBLIC_KEY_FILE")
        path = Path(self.settings.aws_public_key_file).expanduser()
        try:
            material = path.read_bytes()
        except OSError:
            raise CdpipeError(f"public key {path} not found; set CDPIPE_AWS_PUBLIC_KEY_FILE "
                              "or create one with ssh-keygen") from None
        self.ec2.import_key_pair(KeyName=name, PublicKeyMaterial=material,
                                 TagSpecifications=self._tag_spec("key-pair", self.tags()))
        return name

    def _vpc_id(self) -> str:
        if self.settings.aws_subnet_id:
            subnet = self.ec2.describe_subnets(SubnetIds=[self.settings.aws_subnet_id])
            return str(subnet["Subnets"][0]["VpcId"])
        vpcs = self.ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])
        if not vpcs["Vpcs"]:
            raise CdpipeError(f"no default VPC in {self.region}; set CDPIPE_AWS_SUBNET_ID")
        return str(vpcs["Vpcs"][0]["VpcId"])

    def ensure_groups(self) -> dict[str, str]:
        vpc = self._vpc_id()
        env = self._env_id()
        ids: dict[str, str] = {}
        for group in GROUPS:
            name = f"{self._prefix()}-{group}"
            found = self.ec2.describe_security_groups(
                Filters=[{"Name": "group-name", "Values": [name]},
                         {"Name": "vpc-id", "Values": [vpc]}, *self._filters()])
            if found["SecurityGroups"]:
                ids[group] = found["SecurityGroups"][0]["GroupId"]
                continue
            created = self.ec2.create_security_group(
                GroupName=name, Description=f"cdpipe {env} {group}", VpcId=vpc,
                TagSpecifications=self._tag_spec("security-group",
                                                 self.tags() | {"Group": group}))
            ids[group] = created["GroupId"]
        admin = self._admin_cidr()
        rules = {
            "proxy": [self._cidr(PROXY_PORTS["http"], "0.0.0.0/0", "HTTP from anywhere"),
                      self._cidr(SSH_PORT, admin, "SSH from the admin CIDR"),
                      self._cidr(PROXY_PORTS["stats"], admin, "stats page from the admin CIDR")],
            "app": [self._group(APP_PORTS["http"], ids["proxy"],
                                "app and its /metrics from the proxy and the monitor"),
                    self._cidr(SSH_PORT, admin, "SSH from the admin CIDR")],
            "redis": [self._group(REDIS_PORTS["redis"], ids["proxy"],
                                  "Redis from proxy and monitor"),
                      self._group(REDIS_PORTS["redis"], ids["app"], "Redis from the app"),
                      self._group(REDIS_PORTS["agent"], ids["proxy"], "metrics from the monitor"),
                      self._cidr(SSH_PORT, admin, "SSH from the admin CIDR")],
        }
        for group, wanted in rules.items():
            self._authorize(ids[group], wanted)
        return ids

    @staticmethod
    def _cidr(port: int, cidr: str, why: str) -> dict[str, Any]:
        return {"IpProtocol": "tcp", "FromPort": port, "ToPort": port,
                "IpRanges": [{"CidrIp": cidr, "Description": why}]}

    @staticmethod
    def _group(port: int, group_id: str, why: str) -> dict[str, Any]:
        return {"IpProtocol": "tcp", "FromPort": port, "ToPort": port,
                "UserIdGroupPairs": [{"GroupId": group_id, "Description": why}]}

    def _authorize(self, group_id: str, wanted: list[dict[str, Any]]) -> None:
        current = self.ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"][0]
        have = set()
        for perm in current.get("IpPermissions", []):
            for rng in perm.get("IpRanges", []):
                have.add((perm.get("FromPort"), rng["CidrIp"]))
            for pair in perm.get("UserIdGroupPairs", []):
                have.add((perm.get("FromPort"), pair["GroupId"]))
        missing = []
        for rule in wanted:
            source = (rule["IpRanges"][0]["CidrIp"] if "IpRanges" in rule
                      else rule["UserIdGroupPairs"][0]["GroupId"])
            if (rule["FromPort"], source) not in have:
                missing.append(rule)
        if missing:
            self.ec2.authorize_security_group_ingress(GroupId=group_id, IpPermissions=missing)

    def find_groups(self) -> dict[str, str]:
        """The environment's groups, looked up only (one call): the scale path neither
        creates nor changes groups, and its policy does not allow it to."""
        found = self.ec2.describe_security_groups(Filters=self._filters())["SecurityGroups"]
        ids = {tag["Value"]: g["GroupId"] for g in found for tag in g.get("Tags", [])
               if tag["Key"] == "Group"}
        missing = [g for g in GROUPS if g not in ids]
        if missing:
            raise CdpipeError(f"security group(s) {', '.join(missing)} of {self._env_id()} "
                              "not found; run `cdpipe provision --provider aws`")
        return ids

    # -- the scaler's instance profile (cdpipe.providers.scaler_profile) ---------------
    def scaler_name(self) -> str:
        return iam_policy.scaler_name(self.settings.aws_project, self._env_id())

    def scaler_policy(self) -> dict[str, Any]:
        partition = self.session.get_partition_for_region(str(self.region))
        owner = None if self.settings.aws_ami_ssm_parameter else self.settings.aws_ami_owner
        return iam_policy.scaler_policy(
            self.settings.aws_project, self._env_id(), str(self.region),
            self.key_pair_name(), self.settings.aws_instance_type, owner,
            self.settings.aws_ami_ssm_parameter, partition)

    def scaler_profile(self) -> ScalerProfile:
        return ScalerProfile(self.iam, self.ec2, self.scaler_name(), self.tags(),
                             self.scaler_policy, self.show)

    def ensure_scaler_profile(self) -> str:
        return self.scaler_profile().ensure()

    def remove_scaler_profile(self) -> list[str]:
        return self.scaler_profile().remove()

    # -- instances --------------------------------------------------------------------
    def describe(self, role: str | None = None) -> list[dict[str, Any]]:
        pages = self.ec2.get_paginator("describe_instances").paginate(
            Filters=[*self._filters(role), {"Name": "instance-state-name", "Values": ALIVE}])
        return [i for page in pages for r in page["Reservations"] for i in r["Instances"]]

    def _instance(self, raw: dict[str, Any]) -> Instance:
        tags = _tags(raw)
        role = tags["Role"]
        private = str(raw.get("PrivateIpAddress") or "")
        if self.settings.aws_address == "private":
            host = private
        else:
            host = str(raw.get("PublicIpAddress") or "")
            if not host:
                raise CdpipeError(
                    f"{raw['InstanceId']} ({role}) has no public IP address; give its "
                    "subnet public IPs, or set CDPIPE_AWS_ADDRESS=private when this "
                    "machine is inside the VPC")
        return Instance(id=raw["InstanceId"], role=role, host=host,  # type: ignore[arg-type]
                        private_address=private, ports=machine_ports(role),
                        provider=self.name,
                        autoscaled=tags.get(iam_policy.AUTOSCALED_TAG) == "true")

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
            key = self.ensure_key_pair()
            # The scale path (the monitor, with the scaler's policy) only looks groups up
            # and needs no IAM; provision also makes the proxy's instance profile.
            groups = self.find_groups() if autoscaled else self.ensure_groups()
            profile = None if autoscaled else self.ensure_scaler_profile()
            alive = self.describe()  # one call, grouped by the Role tag
            existing = {role: [r for r in alive if _tag(r, "Role") == role] for role in ROLES}
            if profile:
                self.scaler_profile().attach(existing["proxy"])
            missing = {role: wanted.get(role, 0) - len(existing[role]) for role in ROLES}
            if any(n > 0 for n in missing.values()):
                ami = self.find_ami()
                for role, count in missing.items():
                    for n in range(count):
                        created_ids.append(self._run(
                            role, ami, key, groups[ROLE_GROUP[role]], autoscaled,
                            number=len(existing[role]) + n + 1,
                            profile=profile if role == "proxy" else None))
                if created_ids:
                    self.ec2.get_waiter("instance_running").wait(
                        InstanceIds=created_ids, WaiterConfig={"Delay": 5, "MaxAttempts": 60})
            instances = [instance for instance, _ in self._live(self.describe())]
            created = [i for i in instances if i.id in created_ids]
            self.wait_for_ssh(created)
        except CdpipeError as exc:
            raise type(exc)(f"{exc}{self._cleanup(created_ids)}") from None
        except Exception as exc:
            note = self._cleanup(created_ids)
            error = aws_error(exc, "creating instances")
            raise type(error)(f"{error}{note}") from None
        state.instances = instances
        return created

    def wait_for_ssh(self, instances: Sequence[Instance], port: int | None = None,
                     timeout: float | None = None) -> None:
        """Wait until each instance's SSH server answers at ``host`` (the address the
        control machine uses) with its banner: ``running`` comes well before sshd.
        Bounded by CDPIPE_AWS_SSH_WAIT_SECONDS (0: no wait); a one-line error names
        the first instance that did not answer."""
        limit = self.settings.aws_ssh_wait_seconds if timeout is None else timeout
        port = SSH_PORT if port is None else port
        waiting = {i.id: i.host for i in instances}
        if not waiting or limit <= 0:
            return
        self.show(f"waiting up to {limit:.0f} s for SSH on "
                  + ", ".join(f"{iid} at {host}" for iid, host in waiting.items()))
        started = time.monotonic()
        deadline, note_at = started + limit, started + SSH_NOTE_EVERY
        while True:
            for iid, host in list(waiting.items()):
                remaining = deadline - time.monotonic()
                if remaining > 0 and ssh_answers(host, port, min(SSH_PROBE_SECONDS, remaining)):
                    del waiting[iid]
                    self.show(f"{iid} at {host}: SSH answers "
                              f"({time.monotonic() - started:.0f} s)")
            if not waiting:
                return
            now = time.monotonic()
            if now >= deadline:
                iid, host = next(iter(waiting.items()))
                more = f" (nor did {len(waiting) - 1} more)" if len(waiting) > 1 else ""
                raise CdpipeError(
                    f"{iid} at {host}: SSH did not answer within {limit:.0f} s{more}; "
                    "check that CDPIPE_AWS_ADMIN_CIDR holds this machine's address and "
                    "CDPIPE_AWS_ADDRESS, or raise CDPIPE_AWS_SSH_WAIT_SECONDS")
            if now >= note_at:
                self.show(f"still waiting for SSH on {', '.join(waiting)} "
                          f"({now - started:.0f} s of {limit:.0f} s)")
                note_at += SSH_NOTE_EVERY
            time.sleep(min(1.0, deadline - now))

    def _run(self, role: str, ami: str, key: str, group_id: str, autoscaled: bool,
             number: int, profile: str | None = None) -> str:
        tags = self.tags(role) | {"Name": f"{self._prefix()}-{role}-{number}"}
        if autoscaled:
            tags[iam_policy.AUTOSCALED_TAG] = "true"
        args: dict[str, Any] = {
            "ImageId": ami, "InstanceType": self.settings.aws_instance_type, "MinCount": 1,
            "MaxCount": 1, "KeyName": key, "SecurityGroupIds": [group_id],
            # Volume and network interface tagged too: the scaler's policy launches only
            # what the request tags as this environment's (aws:RequestTag).
            "TagSpecifications": self._tag_spec("instance", tags) + self._tag_spec(
                "volume", self.tags(role)) + self._tag_spec("network-interface",
                                                            self.tags(role)),
            "MetadataOptions": {"HttpTokens": "required"},
        }
        if self.settings.aws_subnet_id:
            args["SubnetId"] = self.settings.aws_subnet_id
        user_data = self.user_data()
        if user_data:
            args["UserData"] = user_data
        if profile:
            args["IamInstanceProfile"] = {"Name": profile}
            launched = self.scaler_profile().retry(lambda: self.ec2.run_instances(**args))
        else:
            launched = self.ec2.run_instances(**args)
        return str(launched["Instances"][0]["InstanceId"])

    def user_data(self) -> str:
        """cloud-config authorising CDPIPE_AWS_EXTRA_SSH_KEY_FILE (the scaler's key, for
        the machines it creates) besides the key pair's; empty without one."""
        path = self.settings.aws_extra_ssh_key_file
        if path is None:
            return ""
        try:
            key = Path(path).expanduser().read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise CdpipeError(f"CDPIPE_AWS_EXTRA_SSH_KEY_FILE {path}: cannot read it "
                              f"({exc.strerror or exc})") from None
        if not key.startswith(("ssh-", "ecdsa-")) or "\n" in key:
            raise CdpipeError(f"CDPIPE_AWS_EXTRA_SSH_KEY_FILE {path}: not one OpenSSH "
                              "public key")
        return "#cloud-config\n" + yaml.safe_dump({"ssh_authorized_keys": [key]})

    def _terminate_ids(self, ids: list[str]) -> None:
        if ids:
            self.ec2.terminate_instances(InstanceIds=ids)
            self.ec2.get_waiter("instance_terminated").wait(
                InstanceIds=ids, WaiterConfig={"Delay": 5, "MaxAttempts": 60})

    def _cleanup(self, ids: list[str]) -> str:
        """Best effort, while the first error is being reported: terminates what this
        call created; what to add to the error line about it."""
        if not ids:
            return ""
        try:
            self._terminate_ids(ids)
        except Exception as exc:
            return (f"; the new instance(s) {', '.join(ids)} could NOT be terminated "
                    f"({error_code(exc) or exc}): `cdpipe down` or the EC2 console")
        return f"; the new instance(s) {', '.join(ids)} were terminated"

    def terminate(self, state: State, instance: Instance) -> None:
        mine = {i["InstanceId"] for i in self.describe()}
        if instance.id not in mine:
            raise CdpipeError(f"{instance.id} does not carry this environment's tags; "
                              "refusing to terminate it")
        try:
            self._terminate_ids([instance.id])
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
            self._terminate_ids(ids)
            state.instances = []
            groups = self.ec2.describe_security_groups(
                Filters=self._filters())["SecurityGroups"]
            for group in groups:  # rules first: the groups refer to each other
                if group.get("IpPermissions"):
                    self.ec2.revoke_security_group_ingress(
                        GroupId=group["GroupId"], IpPermissions=group["IpPermissions"])
            for group in groups:
                self._delete_group(group["GroupId"], group["GroupName"])
            if not self.settings.aws_key_name:  # a key pair of the user's own stays
                for pair in self.ec2.describe_key_pairs(
                        Filters=self._filters())["KeyPairs"]:
                    self.ec2.delete_key_pair(KeyName=pair["KeyName"])
        except CdpipeError:
            raise
        except Exception as exc:
            raise aws_error(exc, "removing the environment") from None
        for what in self.remove_scaler_profile():  # once no instance holds it
            self.show(f"deleted {what}")
        return ids

    def _delete_group(self, group_id: str, name: str) -> None:
        """Deletes a group, retrying while AWS still counts the network interfaces of
        just-terminated instances (DependencyViolation), for CDPIPE_AWS_DELETE_WAIT_SECONDS."""
        limit = self.settings.aws_delete_wait_seconds

        def delete() -> None:
            try:
                self.ec2.delete_security_group(GroupId=group_id)
            except botocore.exceptions.ClientError as exc:
                if error_code(exc) != "InvalidGroup.NotFound":  # else: gone already
                    raise

        retry_with_backoff(
            delete, transient=lambda exc: error_code(exc) == "DependencyViolation",
            limit=limit,
            waiting=lambda wait: self.show(
                f"{name} ({group_id}) is still in use; retrying in {wait:.0f} s"),
            gave_up=lambda: CdpipeError(
                f"security group {name} ({group_id}) is still in use after {limit:.0f} s "
                "(DependencyViolation); run `cdpipe down` again in a few minutes"))

    # -- Ansible ----------------------------------------------------------------------
    def check_deployable(self) -> None:
        if "://" not in self.settings.app_repo and "@" not in self.settings.app_repo:
            raise CdpipeError("on AWS the machines clone the app themselves: set "
                              "CDPIPE_APP_REPO to a git URL they can reach")

    def inventory_vars(self) -> dict[str, Any]:
        return {
            "ansible_user": self.settings.aws_ssh_user,
            "ansible_ssh_private_key_file": str(
                Path(self.settings.aws_private_key_file).expanduser()),
            "ansible_become": True,
            "cdpipe_install_packages": True,
            "cdpipe_instance_dir": INSTANCE_DIR,
            "cdpipe_code_dir": f"{INSTANCE_DIR}/code",
            "cdpipe_python": f"{INSTANCE_DIR}/code/venv/bin/python",
            "proxy_dir": f"{INSTANCE_DIR}/haproxy",
            "proxy_controller_config": f"{INSTANCE_DIR}/haproxy/controller.json",
            "proxy_deployer_config": f"{INSTANCE_DIR}/haproxy/deployer.json",
            # The monitor scales through the scaler on its own machine (roles/scaler).
            "scaler_environment": scaler.machine_settings(
                self.settings, self.environment or "", str(self.region or "")),
            "monitor_scale_command": scaler.scale_command(SCALER_DIR, SCALER_USER),
            "scaler_dashboard_port": DASHBOARD_PORT,
        }

    def host_vars(self, instance: Instance) -> dict[str, Any]:
        return {"ansible_host": instance.host, "cdpipe_address": instance.internal_address}

    def check_options(self, options: dict[str, str | float | int]) -> None:
        for name, value in options.items():
            if len(str(value)) > TAG_VALUE_LIMIT:
                raise CdpipeError(
                    f"option {name} is {len(str(value))} characters long; AWS keeps at most "
                    f"{TAG_VALUE_LIMIT} in the tag {OPTION_TAG_PREFIX}{name} (a rules file "
                    "path: move the file to a shorter path)")

    def record_options(self, state: State) -> None:
        """Tags the proxy with each option (``cdpipe:option:<name>``), so a fresh
        workspace, or another machine, reads them back in ``refresh``."""
        self.check_options(state.options)
        ids = [i.id for i in state.of_role("proxy")]
        if not ids or not state.options:
            return
        try:
            self.ec2.create_tags(Resources=ids, Tags=[
                {"Key": f"{OPTION_TAG_PREFIX}{name}", "Value": str(value)}
                for name, value in state.options.items()])
        except Exception as exc:
            raise aws_error(exc, "tagging the proxy with the options") from None

    def record_deployed(self, state: State) -> None:
        """Tags each app instance with the commit it now runs (``Commit``): the AWS
        inventory's ``app_ref``, and a fact any machine can read, not only this state."""
        try:
            for role, commit in state.deployed.items():
                ids = [i.id for i in state.of_role(role)]  # type: ignore[arg-type]
                if ids:
                    self.ec2.create_tags(Resources=ids,
                                         Tags=[{"Key": COMMIT_TAG, "Value": commit}])
        except Exception as exc:
            raise aws_error(exc, "tagging the instances with the deployed commit") from None
