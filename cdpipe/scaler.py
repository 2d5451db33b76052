"""cdpipe's settings for the scaler on the proxy machine (the ``scaler`` role).

On AWS the monitor scales prod by running ``cdpipe scale out|in`` on its own machine,
the same command and code a laptop runs: this module says which ``CDPIPE_*`` settings
that command gets there. Everything that shapes what it creates is carried over from
the control machine that configured the environment (project, instance type, AMI,
subnet, admin CIDR, tags, repository...); what differs on the machine is set here: the
environment's id and region, the private addresses, and the machine's own cloud
endpoints when a test cloud stands in for AWS (``CDPIPE_AWS_MACHINE_ENVIRONMENT``).
The role adds the paths of its own home, key and secrets. Credentials are never here:
the machine's instance profile gives them.
"""

from __future__ import annotations

import json
from pathlib import Path

from cdpipe.config import Settings

# Settings that describe this control machine, not the environment: never carried.
LOCAL_ONLY = {"home", "runtime_dir", "port_base", "aws_public_key_file",
              "aws_private_key_file", "aws_extra_ssh_key_file", "aws_address",
              "aws_machine_environment", "app_deploy_key_file", "local_vcpus",
              "local_memory_mb", "local_cgroups"}
# The command the monitor runs to scale, as the scaler's user (see the role's sudoers).
SCALE_COMMAND_NAME = "scale"


def _value(value: object) -> str:
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, Path):
        return str(value)
    return str(value)


def machine_settings(settings: Settings, environment: str, region: str) -> dict[str, str]:
    """The ``CDPIPE_*`` (and cloud endpoint) variables of the scale command on the
    proxy machine."""
    found: dict[str, str] = {}
    for name in type(settings).model_fields:
        # The mail relay is the monitor's (written by `up`), never the scaler's concern.
        if name in LOCAL_ONLY or name.startswith(("smtp_", "mail_")):
            continue
        value = getattr(settings, name)
        if value is None or value == {}:
            continue
        found[f"CDPIPE_{name.upper()}"] = _value(value)
    found |= {
        "CDPIPE_PROVIDER": "aws",
        "CDPIPE_AWS_ENVIRONMENT": environment,
        "CDPIPE_AWS_REGION": region,
        "CDPIPE_AWS_ADDRESS": "private",
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
    }
    found |= settings.aws_machine_environment
    return found


def scale_command(scaler_dir: str, scaler_user: str) -> list[str]:
    """What the monitor runs (the autoscaler appends ``out|in --max N``)."""
    return ["sudo", "-n", "-u", scaler_user, f"{scaler_dir}/{SCALE_COMMAND_NAME}"]
