"""One machine per EC2 instance: the rig's side of moto.

``sync`` compares moto's instances with the rig's containers and closes the gap: an
instance that is pending or running and has no machine gets one (the image, the private
address moto gave the instance, the key pair's public key for the default user); a
machine whose instance is terminated, or gone, is removed. A machine someone stopped is
left stopped (a dead machine must stay dead for the tests that kill one).
"""

from __future__ import annotations

import base64
import io
import ipaddress
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rig.podman import LABEL, podman

DEFAULT_USER = "admin"
ALIVE = ("pending", "running")
# The control machine's own extra certificate authorities, trusted by its machines too.
LOCAL_AUTHORITIES = Path("/usr/local/share/ca-certificates")


@dataclass(frozen=True)
class RigNames:
    """What one rig calls its network and machines."""

    rig_id: str
    network: str
    subnet: str
    # Options of `podman create` that every machine gets (its size and /proc view).
    machine_options: tuple[str, ...] = ()
    refused: set[str] = field(default_factory=set, compare=False)

    def machine(self, instance_id: str) -> str:
        return f"rig-{self.rig_id}-{instance_id}"


def containers(names: RigNames) -> dict[str, str]:
    """Instance id -> container state, for this rig's machines."""
    out = podman("ps", "--all", "--filter", f"label={LABEL}={names.rig_id}",
                 "--format", '{{index .Labels "io.cdpipe.instance"}} {{.State}}')
    found: dict[str, str] = {}
    for line in out.splitlines():
        if line.strip():
            instance, _, status = line.partition(" ")
            found[instance] = status
    return found


def public_key(ec2: Any, key_name: str) -> str:
    pairs = ec2.describe_key_pairs(KeyNames=[key_name], IncludePublicKey=True)["KeyPairs"]
    return str(pairs[0]["PublicKey"]).strip() + "\n"


def user_data_keys(ec2: Any, instance_id: str) -> list[str]:
    """The ``ssh_authorized_keys`` of the instance's user data when it is cloud-config, as
    cloud-init gives them to the default user (the only part of cloud-init the rig acts
    on); none for other user data."""
    attribute = ec2.describe_instance_attribute(InstanceId=instance_id,
                                                Attribute="userData")
    encoded = attribute.get("UserData", {}).get("Value")
    if not encoded:
        return []
    try:
        text = base64.b64decode(encoded).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return []
    if not text.startswith("#cloud-config"):
        return []
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError:
        return []
    keys = config.get("ssh_authorized_keys", []) if isinstance(config, dict) else []
    return [str(k).strip() for k in keys if isinstance(k, str) and k.strip()]


def start_machine(ec2: Any, names: RigNames, image: str, raw: dict[str, Any]) -> str:
    instance_id = raw["InstanceId"]
    address = raw["PrivateIpAddress"]
    name = names.machine(instance_id)
    podman("create", "--name", name, "--hostname", "ip-" + address.replace(".", "-"),
           "--network", names.network, "--ip", address, "--systemd=always",
           "--label", f"{LABEL}={names.rig_id}", "--label", f"io.cdpipe.instance={instance_id}",
           # NET_ADMIN: the machine's own firewall (the scaler role's metadata rule),
           # as root on an EC2 instance has it.
           "--cap-add", "AUDIT_WRITE", "--cap-add", "NET_RAW", "--cap-add", "NET_ADMIN",
           "--pids-limit", "2048",
           *names.machine_options, image)
    try:
        authorities = sorted(LOCAL_AUTHORITIES.glob("*.crt"))
        if authorities:
            podman("cp", "-", f"{name}:/usr/local/share/ca-certificates/",
                   stdin=_tar({path.name: path.read_bytes() for path in authorities}, 0o644))
        keys = [public_key(ec2, raw["KeyName"])] if raw.get("KeyName") else []
        keys += [key + "\n" for key in user_data_keys(ec2, instance_id)]
        if keys:
            podman("cp", "-", f"{name}:/home/{DEFAULT_USER}/.ssh/",
                   stdin=_tar({"authorized_keys": "".join(keys).encode()}, 0o600))
        podman("start", name)
        if keys:
            podman("exec", name, "chown", "-R", f"{DEFAULT_USER}:{DEFAULT_USER}",
                   f"/home/{DEFAULT_USER}/.ssh")
    except Exception:
        podman("rm", "--force", name, check=False)
        raise
    return name


def _tar(files: dict[str, bytes], mode: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for filename, data in files.items():
            info = tarfile.TarInfo(filename)
            info.size = len(data)
            info.mode = mode
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _inside(names: RigNames, raw: dict[str, Any], log: Any) -> bool:
    """Machines exist only at addresses of the rig's own network: no other address is
    ever given to, or reached as, a machine."""
    address = raw.get("PrivateIpAddress", "")
    if address and ipaddress.ip_address(address) in ipaddress.ip_network(names.subnet):
        return True
    if raw["InstanceId"] not in names.refused:
        names.refused.add(raw["InstanceId"])
        log(f"rig: {raw['InstanceId']} has address {address or 'none'}, outside "
            f"{names.subnet}: no machine (launch it in a subnet of the default VPC)")
    return False


def remove_machine(names: RigNames, instance_id: str) -> None:
    podman("rm", "--force", "--time", "5", names.machine(instance_id), check=False)


def sync(ec2: Any, names: RigNames, image: str, log: Any = print) -> None:
    pages = ec2.get_paginator("describe_instances").paginate()
    instances = {i["InstanceId"]: i for page in pages for r in page["Reservations"]
                 for i in r["Instances"]}
    have = containers(names)
    for instance_id, raw in instances.items():
        alive = raw["State"]["Name"] in ALIVE
        if alive and instance_id not in have and not _inside(names, raw, log):
            continue
        if alive and instance_id not in have:
            log(f"rig: machine for {instance_id} at {raw['PrivateIpAddress']}")
            start_machine(ec2, names, image, raw)
        elif not alive and instance_id in have and raw["State"]["Name"] == "terminated":
            log(f"rig: {instance_id} terminated; removing its machine")
            remove_machine(names, instance_id)
    for instance_id in have:
        if instance_id not in instances:
            remove_machine(names, instance_id)
