"""The scaler's IAM policy: its conditions, evaluated by IAM's rules (tests/iam_eval.py),
its action names against botocore's service models, and docs/aws.md's copy of it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import botocore.session
import pytest

from cdpipe import PROJECT_ROOT
from cdpipe.config import Settings
from cdpipe.providers.aws.iam_policy import dumps, scaler_name, scaler_policy
from tests.iam_eval import Request, allowed, request_tags, resource_tags

ENV, OTHER, REGION, KEY = "env-0123abcd", "env-99999999", "us-east-1", "cdpipe-env-0123abcd"
ARN = f"arn:aws:ec2:{REGION}:123456789012"
MINE = {"Project": "cdpipe", "Environment": ENV, "ManagedBy": "cdpipe", "Role": "prod"}
# What `cdpipe iam-policy` prints with the default settings (docs/aws.md's copy).
TYPE = Settings.model_fields["aws_instance_type"].default
OWNER = Settings.model_fields["aws_ami_owner"].default
POLICY = scaler_policy("cdpipe", ENV, REGION, KEY, TYPE, OWNER)
AUTOSCALED = MINE | {"Autoscaled": "true"}


def launch(tags: dict[str, str], group_tags: dict[str, str] | None = None,
           key: str = KEY, instance_type: str = TYPE, owner: str = OWNER,
           image: str = "ami-1") -> list[Request]:
    """The authorisation requests of one RunInstances (instance, its volume and network
    interface tagged with ``tags`` in the request), then its tagging at launch."""
    created = [f"{ARN}:instance/i-1", f"{ARN}:volume/vol-1", f"{ARN}:network-interface/eni-1"]
    run = [Request("ec2:RunInstances", arn, request_tags(tags)
                   | ({"ec2:InstanceType": instance_type} if "instance/" in arn else {}))
           for arn in created]
    run += [Request("ec2:RunInstances", f"arn:aws:ec2:{REGION}::image/{image}",
                    {"ec2:Owner": owner}),
            Request("ec2:RunInstances", f"{ARN}:subnet/subnet-1"),
            Request("ec2:RunInstances", f"{ARN}:key-pair/{key}"),
            Request("ec2:RunInstances", f"{ARN}:security-group/sg-1",
                    resource_tags(group_tags if group_tags is not None else MINE))]
    tag = [Request("ec2:CreateTags", arn, request_tags(tags)
                   | {"ec2:CreateAction": "RunInstances"}) for arn in created]
    return run + tag


def denied(requests: list[Request]) -> list[str]:
    return [f"{r.action} {r.resource}" for r in requests if not allowed(POLICY, r)]


def test_the_scale_path_is_allowed() -> None:
    assert denied(launch(AUTOSCALED | {"Name": "x"})) == []
    own = f"{ARN}:instance/i-1"
    assert allowed(POLICY, Request("ec2:TerminateInstances", own, resource_tags(AUTOSCALED)))
    assert allowed(POLICY, Request("ec2:CreateTags", own,
                                   resource_tags(MINE) | request_tags({"Commit": "abc"})))
    for action in ("ec2:DescribeInstances", "ec2:DescribeImages", "ec2:DescribeKeyPairs",
                   "ec2:DescribeSecurityGroups", "ec2:DescribeAvailabilityZones"):
        assert allowed(POLICY, Request(action, "*"))


@pytest.mark.parametrize("change", [
    {"Environment": OTHER}, {"Project": "other"}, {"ManagedBy": "me"}, {"Role": "proxy"},
    {"Role": "canary"}])
def test_a_launch_not_tagged_as_this_environments_prod_is_refused(change: dict[str, str]
                                                                  ) -> None:
    refused = denied(launch(MINE | change))
    assert any(r.startswith("ec2:RunInstances") and ":instance/" in r for r in refused)


def test_a_launch_without_tags_into_another_group_or_with_another_key_is_refused() -> None:
    assert denied(launch({}))
    assert denied(launch(MINE, group_tags=MINE | {"Environment": OTHER})) == [
        f"ec2:RunInstances {ARN}:security-group/sg-1"]
    assert denied(launch(MINE, key="someone-else")) == [
        f"ec2:RunInstances {ARN}:key-pair/someone-else"]


def test_only_autoscaled_prod_instances_may_be_terminated() -> None:
    """Proxy, Redis, canary and the prod instances `up` made are out of the scaler's
    reach; an autoscaled prod instance is not (its tags are set only at launch)."""
    own = f"{ARN}:instance/i-1"
    for tags, expected in ((AUTOSCALED, True), (MINE, False),
                           (MINE | {"Role": "proxy"}, False), (MINE | {"Role": "redis"}, False),
                           (AUTOSCALED | {"Role": "canary"}, False),
                           (AUTOSCALED | {"Autoscaled": "false"}, False)):
        assert allowed(POLICY, Request("ec2:TerminateInstances", own,
                                       resource_tags(tags))) == expected, tags


def test_a_launch_of_another_type_or_another_owners_image_is_refused() -> None:
    assert denied(launch(AUTOSCALED, instance_type="p5.48xlarge")) == [
        f"ec2:RunInstances {ARN}:instance/i-1"]
    assert denied(launch(AUTOSCALED, owner="111122223333")) == [
        f"ec2:RunInstances arn:aws:ec2:{REGION}::image/ami-1"]
    # With the AMI from an SSM parameter the owner is not known beforehand: any image.
    ssm = scaler_policy("cdpipe", ENV, REGION, KEY, TYPE, None, ami_ssm_parameter="/p")
    image = Request("ec2:RunInstances", f"arn:aws:ec2:{REGION}::image/ami-1",
                    {"ec2:Owner": "111122223333"})
    assert allowed(ssm, image)


def test_with_the_environments_image_known_a_launch_of_another_is_refused() -> None:
    """Once the environment has instances, the policy names their image: another image
    of the same owner (a newer release, or one someone published under that name) is
    refused."""
    own = scaler_policy("cdpipe", ENV, REGION, KEY, TYPE, OWNER, image_id="ami-1")
    assert [r for r in launch(AUTOSCALED) if not allowed(own, r)] == []
    refused = [r.resource for r in launch(AUTOSCALED, image="ami-2") if not allowed(own, r)]
    assert refused == [f"arn:aws:ec2:{REGION}::image/ami-2"]


def test_reading_is_the_scale_paths_describe_calls_only() -> None:
    """Not ec2:Describe*: DescribeInstanceAttribute reads any instance's user data."""
    for action in ("ec2:DescribeInstanceAttribute", "ec2:DescribeLaunchTemplateVersions",
                   "ec2:DescribeVolumes", "ec2:DescribeSnapshots"):
        assert not allowed(POLICY, Request(action, "*")), action


def test_another_environments_instances_are_out_of_reach() -> None:
    other = resource_tags(MINE | {"Environment": OTHER})
    inst = f"{ARN}:instance/i-2"
    assert not allowed(POLICY, Request("ec2:TerminateInstances", inst, other))
    assert not allowed(POLICY, Request("ec2:TerminateInstances", inst, {}))  # untagged
    assert not allowed(POLICY, Request("ec2:CreateTags", inst,
                                       other | request_tags({"Commit": "abc"})))


def test_only_the_commit_tag_may_be_put_on_an_existing_instance() -> None:
    own = f"{ARN}:instance/i-1"
    for tags in ({"Environment": OTHER}, {"Commit": "abc", "Role": "proxy"}, {"Name": "x"}):
        assert not allowed(POLICY, Request("ec2:CreateTags", own,
                                           resource_tags(MINE) | request_tags(tags))), tags
    # Tagging a group or a volume after the fact is no part of scaling.
    assert not allowed(POLICY, Request("ec2:CreateTags", f"{ARN}:security-group/sg-1",
                                       resource_tags(MINE) | request_tags({"Commit": "a"})))


@pytest.mark.parametrize("action", [
    "iam:PassRole", "iam:CreateRole", "iam:PutRolePolicy", "ec2:DeleteSecurityGroup",
    "ec2:AuthorizeSecurityGroupIngress", "ec2:CreateSecurityGroup", "ec2:ImportKeyPair",
    "ec2:DeleteKeyPair", "ec2:StopInstances", "ec2:ModifyInstanceAttribute",
    "ec2:AssociateIamInstanceProfile", "ssm:GetParameter", "sts:AssumeRole"])
def test_nothing_else_is_allowed(action: str) -> None:
    assert not allowed(POLICY, Request(action, "*", resource_tags(MINE)))


def test_the_ami_parameter_is_readable_only_when_configured() -> None:
    name = "/aws/service/canonical/ubuntu/server/24.04/stable/current/amd64/hvm/ebs-gp3/ami-id"
    policy = scaler_policy("cdpipe", ENV, REGION, KEY, TYPE, ami_ssm_parameter=name)
    arn = f"arn:aws:ssm:{REGION}::parameter{name}"
    assert allowed(policy, Request("ssm:GetParameter", arn))
    assert not allowed(policy, Request("ssm:GetParameter", f"arn:aws:ssm:{REGION}::parameter/x"))
    assert not allowed(policy, Request("ssm:GetParameters", arn))


def test_action_names_are_those_of_the_apis() -> None:
    """Each action names an operation of botocore's service model (a typo grants
    nothing on AWS, and no test would notice)."""
    session = botocore.session.get_session()
    policy = scaler_policy("cdpipe", ENV, REGION, KEY, TYPE, ami_ssm_parameter="/p")
    for statement in policy["Statement"]:
        for action in [statement["Action"]] if isinstance(statement["Action"], str) \
                else statement["Action"]:
            service, name = action.split(":")
            operations = session.get_service_model(service).operation_names
            pattern = re.compile(name.replace("*", ".*") + "$")
            assert any(pattern.match(op) for op in operations), action


def test_the_policy_is_scoped_to_its_region_and_partition() -> None:
    arns = [r for s in POLICY["Statement"] for r in
            ([s["Resource"]] if isinstance(s["Resource"], str) else s["Resource"]) if r != "*"]
    assert arns and all(a.startswith(f"arn:aws:ec2:{REGION}:") for a in arns)
    china = scaler_policy("cdpipe", ENV, "cn-north-1", KEY, TYPE, partition="aws-cn")
    assert "arn:aws-cn:ec2:cn-north-1:*:instance/*" in json.dumps(china)
    assert scaler_name("cdpipe", ENV) == "cdpipe-env-0123abcd-scaler"


def readme_policy() -> Any:
    """The JSON block of docs/aws.md ("The scaler's IAM policy"), once the README's."""
    text = (PROJECT_ROOT / "docs" / "aws.md").read_text()
    found = re.search(r"cdpipe iam-policy --env env-0123abcd`.*?\n```json\n(.*?)\n```",
                      text, re.S)
    assert found, "docs/aws.md: the JSON block after `... cdpipe iam-policy --env env-0123abcd`"
    return found.group(1)


def test_the_readme_prints_the_policy_the_code_makes() -> None:
    assert readme_policy() == dumps(POLICY)


def test_cdpipe_iam_policy_prints_it_and_needs_an_environment(tmp_path: Path) -> None:
    environ = {k: v for k, v in os.environ.items()
               if not k.startswith(("CDPIPE_", "AWS_"))} | {
        "CDPIPE_HOME": str(tmp_path), "AWS_REGION": REGION}
    cdpipe = str(Path(sys.executable).parent / "cdpipe")
    out = subprocess.run([cdpipe, "iam-policy", "--env", ENV], capture_output=True,
                         text=True, timeout=60, env=environ, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout == readme_policy() + "\n"
    out = subprocess.run([cdpipe, "iam-policy"], capture_output=True, text=True, timeout=60,
                         env=environ, check=False)
    assert out.returncode == 1
    assert out.stderr.strip().startswith("error: no AWS environment is selected")
    assert len(out.stderr.strip().splitlines()) == 1
