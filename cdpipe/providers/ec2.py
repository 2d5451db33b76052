"""EC2 provider: instances are EC2 machines created with boto3, found again by tags.

Everything it creates carries the tags ``Project``, ``Environment`` and ``Role`` (plus
``ManagedBy=cdpipe``); it finds, and ever terminates or deletes, only what carries this
environment's tags. Least-privilege security groups: proxy (HTTP from anywhere, SSH and
the stats page from the admin CIDR), app (its port only from the proxy's group, which
also runs the monitor), redis (its port only from the groups that use it). boto3's
standard ``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_EC2`` are honoured (tests use moto).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
from botocore.config import Config

from cdpipe.config import Settings
from cdpipe.errors import CdpipeError
from cdpipe.model import ROLES, SSH_PORT, Instance, Role, machine_ports
from cdpipe.providers.base import Provider
from cdpipe.state import State

PROXY_PORTS, REDIS_PORTS, APP_PORTS = (machine_ports(r) for r in ("proxy", "redis", "prod"))
GROUPS = ("proxy", "app", "redis")
ROLE_GROUP = {"proxy": "proxy", "redis": "redis", "prod": "app", "canary": "app"}
CAPACITY_ERRORS = {"InsufficientInstanceCapacity", "InstanceLimitExceeded",
                   "VcpuLimitExceeded", "InsufficientFreeAddressesInSubnet"}
INSTANCE_DIR = "/opt/cdpipe"  # where everything cdpipe puts on a machine lives
ALIVE = ["pending", "running", "stopping", "stopped"]


def _aws_error(exc: Exception, doing: str) -> CdpipeError:
    if isinstance(exc, botocore.exceptions.NoCredentialsError | (
            botocore.exceptions.PartialCredentialsError)):
        return CdpipeError("AWS credentials not found: set AWS_ACCESS_KEY_ID and "
                           "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE (Jenkins: a credentials "
                           "binding)")
    if isinstance(exc, botocore.exceptions.ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        msg = exc.response.get("Error", {}).get("Message", str(exc))
        if code in CAPACITY_ERRORS:
            return CdpipeError(f"AWS refused {doing}: {code}: {msg}; try another instance "
                               "type (CDPIPE_AWS_INSTANCE_TYPE) or subnet, or raise the limit")
        if code in ("AuthFailure", "UnrecognizedClientException", "InvalidClientTokenId"):
            return CdpipeError(f"AWS rejected the credentials ({code}); check them")
        return CdpipeError(f"AWS error while {doing}: {code}: {msg}")
    if isinstance(exc, botocore.exceptions.EndpointConnectionError):
        return CdpipeError(f"cannot reach the EC2 endpoint ({exc}); check the region and "
                           "AWS_ENDPOINT_URL")
    return CdpipeError(f"AWS error while {doing}: {exc}")


class Ec2Provider(Provider):
    name = "aws"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._ec2: Any = None
        session = boto3.session.Session()
        self.region = (settings.aws_region or os.environ.get("AWS_REGION")
                       or session.region_name)
        self.session = session

    # -- plumbing ---------------------------------------------------------------------
    @property
    def ec2(self) -> Any:
        if self._ec2 is None:
            self._ec2 = self.session.client(
                "ec2", region_name=self.region,
                config=Config(retries={"max_attempts": 5, "mode": "standard"}))
        return self._ec2

    def tags(self, role: str | None = None) -> dict[str, str]:
        tags = {"Project": self.settings.aws_project,
                "Environment": self.settings.aws_environment, "ManagedBy": "cdpipe"}
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
            raise _aws_error(exc, "checking access") from None

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
            raise _aws_error(exc, "looking up the AMI") from None
        if not images:
            raise CdpipeError(
                f"no AMI named {self.settings.aws_ami_name_filter!r} owned by "
                f"{self.settings.aws_ami_owner} in {self.region}; set "
                "CDPIPE_AWS_AMI_NAME_FILTER or CDPIPE_AWS_AMI_SSM_PARAMETER")
        return str(max(images, key=lambda i: i.get("CreationDate", ""))["ImageId"])

    # -- key pair and groups ----------------------------------------------------------
    def ensure_key_pair(self) -> str:
        name = self.settings.aws_key_name
        found = self.ec2.describe_key_pairs(
            Filters=[{"Name": "key-name", "Values": [name]}])["KeyPairs"]
        if found:
            return name
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
        env = self.settings.aws_environment
        ids: dict[str, str] = {}
        for group in GROUPS:
            name = f"{self.settings.aws_project}-{env}-{group}"
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

    # -- instances --------------------------------------------------------------------
    def describe(self, role: str | None = None) -> list[dict[str, Any]]:
        pages = self.ec2.get_paginator("describe_instances").paginate(
            Filters=[*self._filters(role), {"Name": "instance-state-name", "Values": ALIVE}])
        return [i for page in pages for r in page["Reservations"] for i in r["Instances"]]

    def _instance(self, raw: dict[str, Any], autoscaled: bool = False) -> Instance:
        tags = {t["Key"]: t["Value"] for t in raw.get("Tags", [])}
        role = tags["Role"]
        host = raw.get("PrivateIpAddress") or raw.get("PublicIpAddress") or ""
        ports = machine_ports(role)
        return Instance(id=raw["InstanceId"], role=role, host=host, ports=ports,  # type: ignore[arg-type]
                        provider=self.name,
                        autoscaled=autoscaled or tags.get("Autoscaled") == "true")

    def ensure(self, state: State, wanted: dict[Role, int],
               autoscaled: bool = False) -> list[Instance]:
        self.preflight()
        created_ids: list[str] = []
        try:
            key = self.ensure_key_pair()
            groups = self.ensure_groups()
            existing = {role: self.describe(role) for role in ROLES}
            missing = {role: wanted.get(role, 0) - len(existing[role]) for role in ROLES}
            if any(n > 0 for n in missing.values()):
                ami = self.find_ami()
                for role, count in missing.items():
                    for _ in range(count):
                        created_ids.append(self._run(role, ami, key, groups[ROLE_GROUP[role]],
                                                     autoscaled))
                if created_ids:
                    self.ec2.get_waiter("instance_running").wait(
                        InstanceIds=created_ids, WaiterConfig={"Delay": 5, "MaxAttempts": 60})
        except CdpipeError:
            self._cleanup(created_ids)
            raise
        except Exception as exc:
            self._cleanup(created_ids)
            raise _aws_error(exc, "creating instances") from None
        raw_all = self.describe()
        known = {i.id for i in state.instances}
        state.instances = [self._instance(r) for r in raw_all
                           if r["State"]["Name"] in ("pending", "running")]
        state.provider = self.name
        return [i for i in state.instances if i.id not in known and i.id in created_ids]

    def _run(self, role: str, ami: str, key: str, group_id: str, autoscaled: bool) -> str:
        number = len(self.describe(role)) + 1
        tags = self.tags(role) | {
            "Name": f"{self.settings.aws_project}-{self.settings.aws_environment}-{role}-{number}"}
        if autoscaled:
            tags["Autoscaled"] = "true"
        args: dict[str, Any] = {
            "ImageId": ami, "InstanceType": self.settings.aws_instance_type, "MinCount": 1,
            "MaxCount": 1, "KeyName": key, "SecurityGroupIds": [group_id],
            "TagSpecifications": self._tag_spec("instance", tags) + self._tag_spec(
                "volume", self.tags(role)),
            "MetadataOptions": {"HttpTokens": "required"},
        }
        if self.settings.aws_subnet_id:
            args["SubnetId"] = self.settings.aws_subnet_id
        return str(self.ec2.run_instances(**args)["Instances"][0]["InstanceId"])

    def _terminate_ids(self, ids: list[str]) -> None:
        if ids:
            self.ec2.terminate_instances(InstanceIds=ids)
            self.ec2.get_waiter("instance_terminated").wait(
                InstanceIds=ids, WaiterConfig={"Delay": 5, "MaxAttempts": 60})

    def _cleanup(self, ids: list[str]) -> None:
        """Best effort, while the first error is being reported."""
        with contextlib.suppress(Exception):
            self._terminate_ids(ids)

    def terminate(self, state: State, instance: Instance) -> None:
        mine = {i["InstanceId"] for i in self.describe()}
        if instance.id not in mine:
            raise CdpipeError(f"{instance.id} does not carry this environment's tags; "
                              "refusing to terminate it")
        try:
            self._terminate_ids([instance.id])
        except Exception as exc:
            raise _aws_error(exc, f"terminating {instance.id}") from None
        state.instances = [i for i in state.instances if i.id != instance.id]

    def destroy_all(self, state: State) -> list[str]:
        ids = [i["InstanceId"] for i in self.describe()]
        try:
            self._terminate_ids(ids)
            for group in self.ec2.describe_security_groups(
                    Filters=self._filters())["SecurityGroups"]:
                if group.get("IpPermissions"):
                    self.ec2.revoke_security_group_ingress(
                        GroupId=group["GroupId"], IpPermissions=group["IpPermissions"])
            for group in self.ec2.describe_security_groups(
                    Filters=self._filters())["SecurityGroups"]:
                self.ec2.delete_security_group(GroupId=group["GroupId"])
            for pair in self.ec2.describe_key_pairs(Filters=self._filters())["KeyPairs"]:
                self.ec2.delete_key_pair(KeyPairId=pair["KeyPairId"])
        except CdpipeError:
            raise
        except Exception as exc:
            raise _aws_error(exc, "removing the environment") from None
        state.instances = []
        return ids

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
        }

    def host_vars(self, instance: Instance) -> dict[str, Any]:
        return {"ansible_host": instance.host}
