"""The environment's network: its VPC and its three least-privilege security groups.

proxy: HTTP from anywhere, SSH and the stats page from the admin CIDR; app: its port
only from the proxy's group (which also runs the monitor), SSH from the admin CIDR;
redis: its port only from the groups that use it, the agent's metrics from the proxy's
group, SSH from the admin CIDR.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

import botocore.exceptions

from cdpipe.errors import CdpipeError
from cdpipe.model import SSH_PORT, machine_ports
from cdpipe.providers.aws.backoff import retry_with_backoff
from cdpipe.providers.aws.errors import error_code
from cdpipe.providers.aws.scope import Scope

PROXY_PORTS, REDIS_PORTS, APP_PORTS = (machine_ports(r) for r in ("proxy", "redis", "prod"))
GROUPS = ("proxy", "app", "redis")
ROLE_GROUP = {"proxy": "proxy", "redis": "redis", "prod": "app", "canary": "app"}


def admin_cidr(scope: Scope) -> str:
    cidr = scope.settings.aws_admin_cidr
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


def vpc_id(scope: Scope) -> str:
    if scope.settings.aws_subnet_id:
        subnet = scope.ec2.describe_subnets(SubnetIds=[scope.settings.aws_subnet_id])
        return str(subnet["Subnets"][0]["VpcId"])
    vpcs = scope.ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])
    if not vpcs["Vpcs"]:
        raise CdpipeError(f"no default VPC in {scope.region}; set CDPIPE_AWS_SUBNET_ID")
    return str(vpcs["Vpcs"][0]["VpcId"])


def _cidr(port: int, cidr: str, why: str) -> dict[str, Any]:
    return {"IpProtocol": "tcp", "FromPort": port, "ToPort": port,
            "IpRanges": [{"CidrIp": cidr, "Description": why}]}


def _group(port: int, group_id: str, why: str) -> dict[str, Any]:
    return {"IpProtocol": "tcp", "FromPort": port, "ToPort": port,
            "UserIdGroupPairs": [{"GroupId": group_id, "Description": why}]}


def wanted_rules(ids: dict[str, str], admin: str) -> dict[str, list[dict[str, Any]]]:
    """Each group's ingress rules, given the groups' ids and the admin CIDR."""
    return {
        "proxy": [_cidr(PROXY_PORTS["http"], "0.0.0.0/0", "HTTP from anywhere"),
                  _cidr(SSH_PORT, admin, "SSH from the admin CIDR"),
                  _cidr(PROXY_PORTS["stats"], admin, "stats page from the admin CIDR")],
        "app": [_group(APP_PORTS["http"], ids["proxy"],
                       "app and its /metrics from the proxy and the monitor"),
                _cidr(SSH_PORT, admin, "SSH from the admin CIDR")],
        "redis": [_group(REDIS_PORTS["redis"], ids["proxy"], "Redis from proxy and monitor"),
                  _group(REDIS_PORTS["redis"], ids["app"], "Redis from the app"),
                  _group(REDIS_PORTS["agent"], ids["proxy"], "metrics from the monitor"),
                  _cidr(SSH_PORT, admin, "SSH from the admin CIDR")],
    }


def ensure_groups(scope: Scope) -> dict[str, str]:
    """The three groups, made where missing, each with at least its rules."""
    vpc = vpc_id(scope)
    env = scope.env_id()
    ids: dict[str, str] = {}
    for group in GROUPS:
        name = f"{scope.prefix()}-{group}"
        found = scope.ec2.describe_security_groups(
            Filters=[{"Name": "group-name", "Values": [name]},
                     {"Name": "vpc-id", "Values": [vpc]}, *scope.filters()])
        if found["SecurityGroups"]:
            ids[group] = found["SecurityGroups"][0]["GroupId"]
            continue
        created = scope.ec2.create_security_group(
            GroupName=name, Description=f"cdpipe {env} {group}", VpcId=vpc,
            TagSpecifications=scope.tag_spec("security-group", scope.tags() | {"Group": group}))
        ids[group] = created["GroupId"]
    for group, wanted in wanted_rules(ids, admin_cidr(scope)).items():
        _authorize(scope, ids[group], wanted)
    return ids


def _authorize(scope: Scope, group_id: str, wanted: list[dict[str, Any]]) -> None:
    current = scope.ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"][0]
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
        scope.ec2.authorize_security_group_ingress(GroupId=group_id, IpPermissions=missing)


def find_groups(scope: Scope) -> dict[str, str]:
    """The environment's groups, looked up only (one call): the scale path neither
    creates nor changes groups, and its policy does not allow it to."""
    found = scope.ec2.describe_security_groups(Filters=scope.filters())["SecurityGroups"]
    ids = {tag["Value"]: g["GroupId"] for g in found for tag in g.get("Tags", [])
           if tag["Key"] == "Group"}
    missing = [g for g in GROUPS if g not in ids]
    if missing:
        raise CdpipeError(f"security group(s) {', '.join(missing)} of {scope.env_id()} "
                          "not found; run `cdpipe provision --provider aws`")
    return ids


def delete_groups(scope: Scope, show: Callable[[str], None]) -> None:
    """Deletes the environment's groups (their rules first: they refer to each other)."""
    groups = scope.ec2.describe_security_groups(Filters=scope.filters())["SecurityGroups"]
    for group in groups:
        if group.get("IpPermissions"):
            scope.ec2.revoke_security_group_ingress(
                GroupId=group["GroupId"], IpPermissions=group["IpPermissions"])
    for group in groups:
        _delete_group(scope, group["GroupId"], group["GroupName"], show)


def _delete_group(scope: Scope, group_id: str, name: str, show: Callable[[str], None]) -> None:
    """Deletes a group, retrying while AWS still counts the network interfaces of
    just-terminated instances (DependencyViolation), for CDPIPE_AWS_DELETE_WAIT_SECONDS."""
    limit = scope.settings.aws_delete_wait_seconds

    def delete() -> None:
        try:
            scope.ec2.delete_security_group(GroupId=group_id)
        except botocore.exceptions.ClientError as exc:
            if error_code(exc) != "InvalidGroup.NotFound":  # else: gone already
                raise

    retry_with_backoff(
        delete, transient=lambda exc: error_code(exc) == "DependencyViolation",
        limit=limit,
        waiting=lambda wait: show(f"{name} ({group_id}) is still in use; retrying in "
                                  f"{wait:.0f} s"),
        gave_up=lambda: CdpipeError(
            f"security group {name} ({group_id}) is still in use after {limit:.0f} s "
            "(DependencyViolation); run `cdpipe down` again in a few minutes"))
