"""The machine image instances start from: the environment's own, the one its instances
were launched from; for a new environment, the newest available AMI of the configured
owner and name pattern (CDPIPE_AWS_AMI_OWNER, CDPIPE_AWS_AMI_NAME_FILTER), or the one an
SSM parameter names (CDPIPE_AWS_AMI_SSM_PARAMETER)."""

from __future__ import annotations

from typing import Any

from cdpipe.errors import CdpipeError
from cdpipe.providers.aws.errors import aws_error
from cdpipe.providers.aws.scope import Scope


def launched_from(described: list[dict[str, Any]]) -> str:
    """The image the environment's first launched instance started from ("" for none)."""
    launched = sorted((d for d in described if d.get("ImageId")),
                      key=lambda d: str(d.get("LaunchTime", "")))
    return str(launched[0]["ImageId"]) if launched else ""


def find_ami(scope: Scope) -> str:
    settings = scope.settings
    try:
        if settings.aws_ami_ssm_parameter:
            ssm = scope.session.client("ssm", region_name=scope.region)
            return str(ssm.get_parameter(Name=settings.aws_ami_ssm_parameter)
                       ["Parameter"]["Value"])
        images = scope.ec2.describe_images(
            Owners=[settings.aws_ami_owner],
            Filters=[{"Name": "name", "Values": [settings.aws_ami_name_filter]},
                     {"Name": "state", "Values": ["available"]}])["Images"]
    except Exception as exc:
        raise aws_error(exc, "looking up the AMI") from None
    if not images:
        raise CdpipeError(
            f"no AMI named {settings.aws_ami_name_filter!r} owned by "
            f"{settings.aws_ami_owner} in {scope.region}; set "
            "CDPIPE_AWS_AMI_NAME_FILTER or CDPIPE_AWS_AMI_SSM_PARAMETER")
    return str(max(images, key=lambda i: i.get("CreationDate", ""))["ImageId"])
