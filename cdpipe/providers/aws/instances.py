"""The environment's instances: described by its tags, launched with them, waited for
until their SSH server answers, terminated (and waited for until gone).

An instance's ``host`` is its public or private IP (CDPIPE_AWS_ADDRESS: what the control
machine can reach); ``private_address`` is what the other machines use.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from cdpipe.config import Settings
from cdpipe.errors import CdpipeError
from cdpipe.model import ROLES, SSH_PORT, Instance, machine_ports
from cdpipe.providers.aws import iam_policy
from cdpipe.providers.aws.errors import error_code
from cdpipe.providers.aws.scope import Scope, tags_of

PROVIDER = "aws"
ALIVE = ["pending", "running", "stopping", "stopped"]
SSH_PROBE_SECONDS = 3.0  # one connection attempt while waiting for SSH
SSH_NOTE_EVERY = 30.0    # a progress line this often while waiting
WAIT = {"Delay": 5, "MaxAttempts": 60}  # running / terminated waiters


def describe(scope: Scope, role: str | None = None) -> list[dict[str, Any]]:
    """The environment's instances that are not terminated (of one role, if given)."""
    pages = scope.ec2.get_paginator("describe_instances").paginate(
        Filters=[*scope.filters(role), {"Name": "instance-state-name", "Values": ALIVE}])
    return [i for page in pages for r in page["Reservations"] for i in r["Instances"]]


def to_instance(settings: Settings, raw: dict[str, Any]) -> Instance:
    tags = tags_of(raw)
    role = tags["Role"]
    private = str(raw.get("PrivateIpAddress") or "")
    if settings.aws_address == "private":
        host = private
    else:
        host = str(raw.get("PublicIpAddress") or "")
        if not host:
            raise CdpipeError(
                f"{raw['InstanceId']} ({role}) has no public IP address; give its "
                "subnet public IPs, or set CDPIPE_AWS_ADDRESS=private when this "
                "machine is inside the VPC")
    return Instance(id=raw["InstanceId"], role=role, host=host,  # type: ignore[arg-type]
                    private_address=private, ports=machine_ports(role), provider=PROVIDER,
                    autoscaled=tags.get(iam_policy.AUTOSCALED_TAG) == "true")


def live(settings: Settings,
         raw: list[dict[str, Any]]) -> list[tuple[Instance, dict[str, Any]]]:
    """The pending and running instances among ``raw`` with a role, oldest launch
    first (a pending one not yet given its address is left for the next look)."""
    found = []  # sorted() is stable: one second's launches keep AWS's order
    for desc in sorted(raw, key=lambda d: str(d.get("LaunchTime", ""))):
        state = desc["State"]["Name"]
        if state not in ("pending", "running") or tags_of(desc).get("Role") not in ROLES:
            continue
        try:
            found.append((to_instance(settings, desc), desc))
        except CdpipeError:
            if state == "running":
                raise
    return found


def user_data(settings: Settings) -> str:
    """cloud-config authorising CDPIPE_AWS_EXTRA_SSH_KEY_FILE (the scaler's key, for
    the machines it creates) besides the key pair's; empty without one."""
    path = settings.aws_extra_ssh_key_file
    if path is None:
        return ""
    try:
        key = Path(path).expanduser().read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise CdpipeError(f"CDPIPE_AWS_EXTRA_SSH_KEY_FILE {path}: cannot read it "
                          f"({exc.strerror or exc})") from None
    if not key.startswith(("ssh-", "ecdsa-")) or "\n" in key:
        raise CdpipeError(f"CDPIPE_AWS_EXTRA_SSH_KEY_FILE {path}: not one OpenSSH public key")
    return "#cloud-config\n" + yaml.safe_dump({"ssh_authorized_keys": [key]})


def launch_request(scope: Scope, role: str, ami: str, key: str, group_id: str,
                   autoscaled: bool, number: int, profile: str | None) -> dict[str, Any]:
    """RunInstances' arguments for one instance of ``role``."""
    tags = scope.tags(role) | {"Name": f"{scope.prefix()}-{role}-{number}"}
    if autoscaled:
        tags[iam_policy.AUTOSCALED_TAG] = "true"
    args: dict[str, Any] = {
        "ImageId": ami, "InstanceType": scope.settings.aws_instance_type, "MinCount": 1,
        "MaxCount": 1, "KeyName": key, "SecurityGroupIds": [group_id],
        # Volume and network interface tagged too: the scaler's policy launches only
        # what the request tags as this environment's (aws:RequestTag).
        "TagSpecifications": scope.tag_spec("instance", tags)
        + scope.tag_spec("volume", scope.tags(role))
        + scope.tag_spec("network-interface", scope.tags(role)),
        "MetadataOptions": {"HttpTokens": "required"},
    }
    if scope.settings.aws_subnet_id:
        args["SubnetId"] = scope.settings.aws_subnet_id
    data = user_data(scope.settings)
    if data:
        args["UserData"] = data
    if profile:
        args["IamInstanceProfile"] = {"Name": profile}
    return args


def wait_running(scope: Scope, ids: list[str]) -> None:
    if ids:
        scope.ec2.get_waiter("instance_running").wait(InstanceIds=ids, WaiterConfig=WAIT)


def terminate_ids(scope: Scope, ids: list[str]) -> None:
    if ids:
        scope.ec2.terminate_instances(InstanceIds=ids)
        scope.ec2.get_waiter("instance_terminated").wait(InstanceIds=ids, WaiterConfig=WAIT)


def cleanup(scope: Scope, ids: list[str]) -> str:
    """Best effort, while the first error is being reported: terminates what a call
    created; what to add to the error line about it."""
    if not ids:
        return ""
    try:
        terminate_ids(scope, ids)
    except Exception as exc:
        return (f"; the new instance(s) {', '.join(ids)} could NOT be terminated "
                f"({error_code(exc) or exc}): `cdpipe down` or the EC2 console")
    return f"; the new instance(s) {', '.join(ids)} were terminated"


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


def wait_for_ssh(instances: Sequence[Instance], limit: float, show: Callable[[str], None],
                 port: int = SSH_PORT) -> None:
    """Wait until each instance's SSH server answers at ``host`` (the address the
    control machine uses) with its banner: ``running`` comes well before sshd.
    Bounded by ``limit`` seconds (0: no wait); a one-line error names the first
    instance that did not answer."""
    waiting = {i.id: i.host for i in instances}
    if not waiting or limit <= 0:
        return
    show(f"waiting up to {limit:.0f} s for SSH on "
         + ", ".join(f"{iid} at {host}" for iid, host in waiting.items()))
    started = time.monotonic()
    deadline, note_at = started + limit, started + SSH_NOTE_EVERY
    while True:
        for iid, host in list(waiting.items()):
            remaining = deadline - time.monotonic()
            if remaining > 0 and ssh_answers(host, port, min(SSH_PROBE_SECONDS, remaining)):
                del waiting[iid]
                show(f"{iid} at {host}: SSH answers ({time.monotonic() - started:.0f} s)")
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
            show(f"still waiting for SSH on {', '.join(waiting)} "
                 f"({now - started:.0f} s of {limit:.0f} s)")
            note_at += SSH_NOTE_EVERY
        time.sleep(min(1.0, deadline - now))
