"""podman, as the rig runs it: rootful, runc, cgroupfs, the rig's own containers.conf."""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
from pathlib import Path

CONTAINERS_CONF = Path(__file__).with_name("containers.conf")
LABEL = "io.cdpipe.rig"  # every container and network the rig makes carries it


class PodmanError(RuntimeError):
    pass


def unavailable() -> str | None:
    """Why machines cannot run here, or None when they can."""
    if shutil.which("podman") is None:
        return "podman is not installed (scripts/bootstrap installs it)"
    if shutil.which("runc") is None:
        return "runc is not installed (scripts/bootstrap installs it)"
    if shutil.which("debootstrap") is None:
        return "debootstrap is not installed (scripts/bootstrap installs it)"
    if os.geteuid() != 0:
        return "the rig needs root (rootful podman gives machines their own addresses)"
    clash = _address_in_rig_subnet()
    if clash:
        return (f"this machine already has {clash}, inside the rig's network 172.31.0.0/16 "
                "(moto's default VPC, which the machines' addresses must match)")
    return None


def _address_in_rig_subnet() -> str | None:
    """An address of this machine inside 172.31.0.0/16, other than the rig bridge's own."""
    rig = ipaddress.ip_network("172.31.0.0/16")
    out = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True,
                         check=False).stdout
    for line in out.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        address = ipaddress.ip_interface(fields[3])
        if address.ip in rig and address.ip != ipaddress.ip_address("172.31.0.1"):
            return f"{address} on {fields[1]}"
    return None


def environ() -> dict[str, str]:
    return os.environ | {"CONTAINERS_CONF": str(CONTAINERS_CONF)}


def podman(*args: str, check: bool = True, stdin: bytes | None = None,
           timeout: float = 300) -> str:
    """Runs podman; its stdout, or PodmanError with podman's own last line."""
    proc = subprocess.run(["podman", *args], input=stdin, capture_output=True,
                          env=environ(), timeout=timeout, check=False)
    if check and proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        raise PodmanError(f"podman {args[0]} failed: {err[-1] if err else proc.returncode}")
    return proc.stdout.decode(errors="replace")


def succeeds(*args: str) -> bool:
    """Whether a podman query (``network exists``, ``image exists``) answers yes."""
    return subprocess.run(["podman", *args], capture_output=True, env=environ(),
                          timeout=60, check=False).returncode == 0
