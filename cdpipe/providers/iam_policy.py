"""The IAM policy of an environment's scaler: what the monitor on the proxy machine may do
with the instance profile's credentials when it runs ``cdpipe scale out|in`` there.

The least that the scale path of :mod:`cdpipe.providers.ec2` needs, and no more:

- ``ec2:Describe*`` (read-only, on ``*``: EC2's Describe calls take no resource ARN);
- ``ec2:RunInstances`` only of an instance, volume and network interface tagged, in the
  request, with this environment's ``Project``, ``Environment``, ``ManagedBy=cdpipe`` and
  ``Role=prod``; from an image, subnet and key pair (this environment's), into a security
  group carrying this environment's tags; no instance profile (no ``iam:PassRole``);
- ``ec2:CreateTags`` only as part of that launch (``ec2:CreateAction=RunInstances``), or
  on an instance of this environment with no tag key but ``Commit``;
- ``ec2:TerminateInstances`` only of an instance of this environment;
- ``ssm:GetParameter`` of the one AMI parameter, when CDPIPE_AWS_AMI_SSM_PARAMETER is set.

Nothing on IAM, security groups, key pairs, or another environment. ``cdpipe iam-policy``
prints it.
"""

from __future__ import annotations

import json
from typing import Any

VERSION = "2012-10-17"
SCALED_ROLE = "prod"      # the only role the scaler launches
COMMIT_TAG = "Commit"     # the one tag it may put on an existing instance (record_deployed)
MANAGED_BY = "cdpipe"
EC2_TRUST = {"Version": VERSION, "Statement": [{
    "Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"},
    "Action": "sts:AssumeRole"}]}


def scaler_name(project: str, environment: str) -> str:
    """The IAM role, its inline policy and its instance profile: one name for all three."""
    return f"{project}-{environment}-scaler"


def scaler_policy(project: str, environment: str, region: str, key_name: str,
                  ami_ssm_parameter: str | None = None, partition: str = "aws") -> dict[str, Any]:
    """The policy document (a dict; ``json.dumps`` it) for environment ``environment``."""
    ec2 = f"arn:{partition}:ec2:{region}"
    mine = {"ec2:ResourceTag/Project": project, "ec2:ResourceTag/Environment": environment}
    launched = [f"{ec2}:*:instance/*", f"{ec2}:*:volume/*", f"{ec2}:*:network-interface/*"]
    statements: list[dict[str, Any]] = [
        {"Sid": "Read", "Effect": "Allow", "Action": "ec2:Describe*", "Resource": "*"},
        {"Sid": "LaunchTaggedProd", "Effect": "Allow", "Action": "ec2:RunInstances",
         "Resource": launched,
         "Condition": {"StringEquals": {
             "aws:RequestTag/Project": project, "aws:RequestTag/Environment": environment,
             "aws:RequestTag/ManagedBy": MANAGED_BY, "aws:RequestTag/Role": SCALED_ROLE}}},
        {"Sid": "LaunchFrom", "Effect": "Allow", "Action": "ec2:RunInstances",
         "Resource": [f"{ec2}::image/*", f"{ec2}:*:subnet/*",
                      f"{ec2}:*:key-pair/{key_name}"]},
        {"Sid": "LaunchIntoOwnGroups", "Effect": "Allow", "Action": "ec2:RunInstances",
         "Resource": f"{ec2}:*:security-group/*", "Condition": {"StringEquals": mine}},
        {"Sid": "TagAtLaunch", "Effect": "Allow", "Action": "ec2:CreateTags",
         "Resource": launched,
         "Condition": {"StringEquals": {"ec2:CreateAction": "RunInstances"}}},
        {"Sid": "TagCommit", "Effect": "Allow", "Action": "ec2:CreateTags",
         "Resource": f"{ec2}:*:instance/*",
         "Condition": {"StringEquals": mine,
                       "ForAllValues:StringEquals": {"aws:TagKeys": [COMMIT_TAG]}}},
        {"Sid": "TerminateOwn", "Effect": "Allow", "Action": "ec2:TerminateInstances",
         "Resource": f"{ec2}:*:instance/*", "Condition": {"StringEquals": mine}},
    ]
    if ami_ssm_parameter:
        name = ami_ssm_parameter.lstrip("/")
        statements.append({"Sid": "FindAmi", "Effect": "Allow", "Action": "ssm:GetParameter",
                           "Resource": f"arn:{partition}:ssm:{region}:*:parameter/{name}"})
    return {"Version": VERSION, "Statement": statements}


def dumps(document: dict[str, Any]) -> str:
    """The form printed by ``cdpipe iam-policy`` and in docs/aws.md."""
    return json.dumps(document, indent=2)
