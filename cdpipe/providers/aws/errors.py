"""AWS's refusals as one line each: what was refused, why, and what to do."""

from __future__ import annotations

import botocore.exceptions

from cdpipe.errors import CdpipeError, ProviderRefused

CAPACITY_ERRORS = {"InsufficientInstanceCapacity", "InstanceLimitExceeded",
                   "VcpuLimitExceeded", "InsufficientFreeAddressesInSubnet"}
DENIED = {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation"}


def error_code(exc: Exception) -> str:
    if isinstance(exc, botocore.exceptions.ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def aws_error(exc: Exception, doing: str) -> CdpipeError:
    if isinstance(exc, botocore.exceptions.NoCredentialsError | (
            botocore.exceptions.PartialCredentialsError)):
        return CdpipeError("AWS credentials not found: set AWS_ACCESS_KEY_ID and "
                           "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE (Jenkins: a credentials "
                           "binding)")
    if isinstance(exc, botocore.exceptions.ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        msg = exc.response.get("Error", {}).get("Message", str(exc))
        if code in CAPACITY_ERRORS:
            return ProviderRefused(f"AWS refused {doing}: {code}: {msg}; try another "
                                   "instance type (CDPIPE_AWS_INSTANCE_TYPE) or subnet, or "
                                   "raise the limit")
        if code in ("AuthFailure", "UnrecognizedClientException", "InvalidClientTokenId"):
            return CdpipeError(f"AWS rejected the credentials ({code}); check them")
        if code in DENIED:
            return CdpipeError(f"AWS refused {doing}: these credentials may not call "
                               f"{exc.operation_name} ({code}); grant it to the user or role "
                               "running cdpipe")
        return CdpipeError(f"AWS error while {doing}: {code}: {msg}")
    if isinstance(exc, botocore.exceptions.EndpointConnectionError):
        return CdpipeError(f"cannot reach the EC2 endpoint ({exc}); check the region and "
                           "AWS_ENDPOINT_URL")
    return CdpipeError(f"AWS error while {doing}: {exc}")


def iam_error(exc: Exception, doing: str) -> CdpipeError:
    """An IAM refusal names the permission the user running cdpipe lacks."""
    if isinstance(exc, botocore.exceptions.ClientError) and error_code(exc) in DENIED:
        return CdpipeError(
            f"AWS refused {doing}: the user running cdpipe lacks iam:{exc.operation_name} "
            f"({error_code(exc)}); grant it (with iam:PassRole on the role), see "
            "docs/aws.md, \"The scaler's IAM policy\"")
    return aws_error(exc, doing)
