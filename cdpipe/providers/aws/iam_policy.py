"""The IAM policy of an environment's scaler: what the monitor on the proxy machine may do
with the instance profile's credentials when it runs ``cdpipe scale out|in`` there.

The least that the scale path of :mod:`cdpipe.providers.aws` needs, and no more:

- the five Describe calls the scale path makes (read-only, on ``*``: EC2's Describe
  calls take no resource ARN), not ``ec2:Describe*``, which includes reading every
  instance's user data in the account (``DescribeInstanceAttribute``);
- ``ec2:RunInstances`` only of an instance of the environment's instance type, its
  volume and network interface tagged, in the request, with this environment's
  ``Project``, ``Environment``, ``ManagedBy=cdpipe`` and ``Role=prod``; from the
  environment's own image (the AMI its instances were launched from), of the image
  owner (when the AMI is found by owner and name); a subnet and
  this environment's key pair, into a security group carrying this environment's tags;
  no instance profile (no ``iam:PassRole``);
- ``ec2:CreateTags`` only as part of that launch (``ec2:CreateAction=RunInstances``), or
  on an instance of this environment with no tag key but ``Commit``;
- ``ec2:TerminateInstances`` only of an autoscaled prod instance of this environment
  (``Role=prod``, ``Autoscaled=true``: tags set only at launch, so nothing can be
  relabelled into them);
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
AUTOSCALED_TAG = "Autoscaled"  # "true" on the instances a scale-out launched
READ_ACTIONS = ["ec2:DescribeAvailabilityZones", "ec2:DescribeImages", "ec2:DescribeInstances",
                "ec2:DescribeKeyPairs", "ec2:DescribeSecurityGroups"]
EC2_TRUST = {"Version": VERSION, "Statement": [{
    "Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"},
    "Action": "sts:AssumeRole"}]}


def scaler_name(project: str, environment: str) -> str:
    """The IAM role, its inline policy and its instance profile: one name for all three."""
    return f"{project}-{environment}-scaler"


def scaler_policy(project: str, environment: str, region: str, key_name: str,
                  instance_type: str, image_owner: str | None = None,
                  ami_ssm_parameter: str | None = None, partition: str = "aws",
                  image_id: str | None = None) -> dict[str, Any]:
    """The policy document (a dict; ``json.dumps`` it) for environment ``environment``:
    launches of ``instance_type`` only, from images of ``image_owner`` (None: the AMI
    comes from an SSM parameter, whose owner is not known beforehand), and from
    ``image_id`` only when given (the environment's own image)."""
    ec2 = f"arn:{partition}:ec2:{region}"
    mine = {"ec2:ResourceTag/Project": project, "ec2:ResourceTag/Environment": environment}
    launched = [f"{ec2}:*:instance/*", f"{ec2}:*:volume/*", f"{ec2}:*:network-interface/*"]
    tagged_prod = {
        "aws:RequestTag/Project": project, "aws:RequestTag/Environment": environment,
        "aws:RequestTag/ManagedBy": MANAGED_BY, "aws:RequestTag/Role": SCALED_ROLE}
    image: dict[str, Any] = {"Sid": "LaunchFromImage", "Effect": "Allow",
                             "Action": "ec2:RunInstances",
                             "Resource": f"{ec2}::image/{image_id or '*'}"}
    if image_owner:
        image["Condition"] = {"StringEquals": {"ec2:Owner": image_owner}}
    statements: list[dict[str, Any]] = [
        {"Sid": "Read", "Effect": "Allow", "Action": READ_ACTIONS, "Resource": "*"},
        {"Sid": "LaunchTaggedProd", "Effect": "Allow", "Action": "ec2:RunInstances",
         "Resource": f"{ec2}:*:instance/*",
         "Condition": {"StringEquals": tagged_prod | {"ec2:InstanceType": instance_type}}},
        {"Sid": "LaunchTaggedProdParts", "Effect": "Allow", "Action": "ec2:RunInstances",
         "Resource": launched[1:], "Condition": {"StringEquals": tagged_prod}},
        image,
        {"Sid": "LaunchFrom", "Effect": "Allow", "Action": "ec2:RunInstances",
         "Resource": [f"{ec2}:*:subnet/*", f"{ec2}:*:key-pair/{key_name}"]},
        {"Sid": "LaunchIntoOwnGroups", "Effect": "Allow", "Action": "ec2:RunInstances",
         "Resource": f"{ec2}:*:security-group/*", "Condition": {"StringEquals": mine}},
        {"Sid": "TagAtLaunch", "Effect": "Allow", "Action": "ec2:CreateTags",
         "Resource": launched,
         "Condition": {"StringEquals": {"ec2:CreateAction": "RunInstances"}}},
        {"Sid": "TagCommit", "Effect": "Allow", "Action": "ec2:CreateTags",
         "Resource": f"{ec2}:*:instance/*",
         "Condition": {"StringEquals": mine,
                       "ForAllValues:StringEquals": {"aws:TagKeys": [COMMIT_TAG]}}},
        {"Sid": "TerminateAutoscaledProd", "Effect": "Allow",
         "Action": "ec2:TerminateInstances", "Resource": f"{ec2}:*:instance/*",
         "Condition": {"StringEquals": mine | {
             "ec2:ResourceTag/Role": SCALED_ROLE, f"ec2:ResourceTag/{AUTOSCALED_TAG}": "true"}}},
    ]
    if ami_ssm_parameter:
        name = ami_ssm_parameter.lstrip("/")
        statements.append({"Sid": "FindAmi", "Effect": "Allow", "Action": "ssm:GetParameter",
                           "Resource": f"arn:{partition}:ssm:{region}:*:parameter/{name}"})
    return {"Version": VERSION, "Statement": statements}


def dumps(document: dict[str, Any]) -> str:
    """The form printed by ``cdpipe iam-policy`` and in docs/aws.md."""
    return json.dumps(document, indent=2)
