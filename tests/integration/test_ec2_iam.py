"""The scaler's IAM role and instance profile against a moto server on 127.0.0.1 with
IAM enforcement turned on (``/moto-api/reset-auth``): ``provision`` makes them for the
proxy, ``down`` removes them, and the scale path runs on the role's own credentials.

What moto (5.2) checks: the signature and the access key (an IAM user's or an assumed
role's), and each request's action against the principal's policies. What it does not:
EC2 requests are matched against ``Resource: "*"`` only, and conditions of identity
policies are not evaluated. So the role's policy is given moto's view of it (each
``Resource`` as ``*``: the same actions) while the scale path runs, and the requests it
made are recorded and checked against the full document, resources and conditions, by
``tests/iam_eval.py`` (IAM's rules for the subset the policy uses)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import botocore.exceptions
import pytest
import requests

from cdpipe.config import Settings
from cdpipe.errors import CdpipeError
from cdpipe.providers.aws import backoff, images, network, scaler_profile
from cdpipe.providers.aws.provider import Ec2Provider
from cdpipe.state import State
from tests.iam_eval import Request, allowed, request_tags, resource_tags
from tests.integration.test_ec2_provider import LAYOUT, ec2, tagged

SHA = "0123456789abcdef0123456789abcdef01234567"


def iam() -> Any:
    return boto3.client("iam")


def profile_of(instance_id: str) -> str | None:
    found = ec2().describe_iam_instance_profile_associations(Filters=[
        {"Name": "instance-id", "Values": [instance_id]}])["IamInstanceProfileAssociations"]
    return found[0]["IamInstanceProfile"]["Arn"].rsplit("/", 1)[1] if found else None


def provisioned() -> tuple[Ec2Provider, State, list[str]]:
    provider = Ec2Provider(Settings())
    lines: list[str] = []
    provider.show = lines.append
    state = State()
    provider.ensure(state, LAYOUT)  # type: ignore[arg-type]
    return provider, state, lines


def test_provision_makes_the_scaler_for_the_proxy_only_and_down_removes_it(
        moto: str) -> None:
    provider, state, lines = provisioned()
    name = f"cdpipe-{state.environment}-scaler"
    role = iam().get_role(RoleName=name)["Role"]
    assert {"Key": "Environment", "Value": state.environment} in role["Tags"]
    trust = role["AssumeRolePolicyDocument"]
    trust = json.loads(trust) if isinstance(trust, str) else trust
    assert trust["Statement"][0]["Principal"] == {"Service": "ec2.amazonaws.com"}
    document = iam().get_role_policy(RoleName=name, PolicyName=name)["PolicyDocument"]
    document = json.loads(document) if isinstance(document, str) else document
    assert document == provider.scaler_policy()
    # Launches only from the environment's own image, the one its instances run.
    images = {i["ImageId"] for i in tagged(ec2(), state.environment)}
    assert images == {state.image}
    launch_from = next(s for s in document["Statement"] if s["Sid"] == "LaunchFromImage")
    assert launch_from["Resource"] == f"arn:aws:ec2:us-east-1::image/{state.image}"
    profile = iam().get_instance_profile(InstanceProfileName=name)["InstanceProfile"]
    assert [r["RoleName"] for r in profile["Roles"]] == [name]
    assert {i.role: profile_of(i.id) for i in state.instances} == {
        "proxy": name, "redis": None, "prod": None, "canary": None}

    # Idempotent; and a proxy without the profile (an older environment) gets it.
    proxy = state.of_role("proxy")[0]
    association = ec2().describe_iam_instance_profile_associations(Filters=[
        {"Name": "instance-id", "Values": [proxy.id]}])["IamInstanceProfileAssociations"][0]
    ec2().disassociate_iam_instance_profile(AssociationId=association["AssociationId"])
    assert profile_of(proxy.id) is None
    assert provider.ensure(state, LAYOUT) == []  # type: ignore[arg-type]
    assert profile_of(proxy.id) == name
    assert f"{proxy.id} (proxy): associating instance profile {name}" in lines
    assert len(iam().list_instance_profiles()["InstanceProfiles"]) == 1

    # Another environment's scaler stays when this one goes.
    other = Ec2Provider(Settings())
    other.ensure(State(), {"proxy": 1})  # type: ignore[dict-item]
    provider.destroy_all(state)
    for call, kwargs in ((iam().get_role, {"RoleName": name}),
                         (iam().get_instance_profile, {"InstanceProfileName": name})):
        with pytest.raises(botocore.exceptions.ClientError, match="NoSuchEntity"):
            call(**kwargs)
    assert f"deleted role {name}" in lines
    assert iam().get_role(RoleName=other.scaler_name())["Role"]
    assert provider.remove_scaler_profile() == []  # gone already: nothing, no error


def test_a_foreign_role_of_the_same_name_is_neither_used_nor_deleted(moto: str) -> None:
    provider = Ec2Provider(Settings())
    provider.environment = "env-feedf00d"
    name = provider.scaler_name()
    iam().create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps({}))
    with pytest.raises(CdpipeError, match=f"IAM role {name} exists but does not carry"):
        provider.ensure_scaler_profile()
    lines: list[str] = []
    provider.show = lines.append
    assert provider.remove_scaler_profile() == []
    assert iam().get_role(RoleName=name) and "left as it is" in lines[0]


def moto_view(policy: dict[str, Any]) -> dict[str, Any]:
    """The same actions, each on ``*``: what moto can match an EC2 request against."""
    return {"Version": policy["Version"],
            "Statement": [s | {"Resource": "*"} for s in policy["Statement"]]}


class Recorder:
    """The operations and parameters a boto3 client sends (waiters' calls included)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        self.calls.append((model.name, dict(params)))

    def since(self, start: int) -> list[str]:
        return [name for name, _ in self.calls[start:]]


@pytest.fixture
def enforced(moto: str) -> Iterator[Any]:
    """Turns moto's IAM enforcement on (the returned function; it takes the credentials
    to use from then on), and off again at the end."""
    def on(credentials: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", credentials["AccessKeyId"])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", credentials["SecretAccessKey"])
        monkeypatch.setenv("AWS_SESSION_TOKEN", credentials["SessionToken"])
        requests.post(f"{moto}/moto-api/reset-auth", data=b"0", timeout=5).raise_for_status()
    yield on
    requests.post(f"{moto}/moto-api/reset-auth", data=b"inf", timeout=5).raise_for_status()


def as_admin(moto: str, monkeypatch: pytest.MonkeyPatch) -> None:
    requests.post(f"{moto}/moto-api/reset-auth", data=b"inf", timeout=5).raise_for_status()
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.delenv("AWS_SESSION_TOKEN")


def iam_requests(calls: list[tuple[str, dict[str, Any]]], tags_of: dict[str, dict[str, str]],
                 region: str, owner_of: dict[str, str]) -> list[Request]:
    """The authorisation requests AWS makes of the recorded calls (``tags_of``: each
    instance's and group's tags; ``owner_of``: each image's owner)."""
    arn = f"arn:aws:ec2:{region}:123456789012"
    out: list[Request] = []
    for name, params in calls:
        if name == "RunInstances":
            specs = {s["ResourceType"]: {t["Key"]: t["Value"] for t in s["Tags"]}
                     for s in params["TagSpecifications"]}
            kinds = {"instance": "i-new", "volume": "vol-new", "network-interface": "eni-new"}
            for kind, rid in kinds.items():
                for action in ("ec2:RunInstances", "ec2:CreateTags"):
                    context = request_tags(specs.get(kind, {}))
                    if action == "ec2:CreateTags":
                        context["ec2:CreateAction"] = "RunInstances"
                    elif kind == "instance":
                        context["ec2:InstanceType"] = params["InstanceType"]
                    out.append(Request(action, f"{arn}:{kind}/{rid}", context))
            out.append(Request("ec2:RunInstances", f"arn:aws:ec2:{region}::image/"
                               f"{params['ImageId']}",
                               {"ec2:Owner": owner_of[params["ImageId"]]}))
            out.append(Request("ec2:RunInstances", f"{arn}:subnet/subnet-default"))
            out.append(Request("ec2:RunInstances", f"{arn}:key-pair/{params['KeyName']}"))
            out += [Request("ec2:RunInstances", f"{arn}:security-group/{g}",
                            resource_tags(tags_of[g])) for g in params["SecurityGroupIds"]]
        elif name in ("CreateTags", "TerminateInstances"):
            added = request_tags({t["Key"]: t["Value"] for t in params.get("Tags", [])})
            out += [Request(f"ec2:{name}", f"{arn}:instance/{i}",
                            resource_tags(tags_of[i]) | (added if name == "CreateTags" else {}))
                    for i in (params.get("Resources") or params["InstanceIds"])]
        else:
            out.append(Request(f"ec2:{name}", "*"))
    return out


def test_the_scale_path_runs_on_the_scalers_credentials_and_nothing_more(
        moto: str, enforced: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    provider, state, _lines = provisioned()
    env = state.environment
    name = provider.scaler_name()
    policy = provider.scaler_policy()
    iam().put_role_policy(RoleName=name, PolicyName=name,
                          PolicyDocument=json.dumps(moto_view(policy)))
    role_arn = iam().get_role(RoleName=name)["Role"]["Arn"]
    credentials = boto3.client("sts").assume_role(
        RoleArn=role_arn, RoleSessionName="monitor")["Credentials"]
    enforced(credentials, monkeypatch)

    scaler = Ec2Provider(Settings())
    scaler.attach(state)
    recorder = Recorder()
    scaler.ec2.meta.events.register("provide-client-params.ec2.*", recorder)
    created = scaler.ensure(state, {"prod": 2}, autoscaled=True)  # type: ignore[dict-item]
    out_calls = recorder.since(0)
    state.deployed = {"prod": SHA, "canary": SHA}
    mark = len(recorder.calls)
    scaler.record_deployed(state)
    tag_calls = recorder.since(mark)
    new_tags = {t["Key"]: t["Value"] for t in scaler.describe("prod")[-1]["Tags"]}
    mark = len(recorder.calls)
    scaler.terminate(state, created[0])
    in_calls = recorder.since(mark)
    scale_path = list(recorder.calls)
    assert len(created) == 1 and created[0].autoscaled and len(state.of_role("prod")) == 1

    # Refused: IAM, groups, key pairs, and provision itself (it needs IAM).
    refusals = [
        lambda: scaler.iam.list_roles(),
        lambda: scaler.iam.create_role(RoleName="x", AssumeRolePolicyDocument="{}"),
        lambda: scaler.ec2.delete_security_group(GroupId=network.find_groups(scaler.scope)["app"]),
        lambda: scaler.ec2.authorize_security_group_ingress(
            GroupId=network.find_groups(scaler.scope)["app"], IpPermissions=[{
                "IpProtocol": "tcp", "FromPort": 1, "ToPort": 1,
                "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]),
        lambda: scaler.ec2.delete_key_pair(KeyName=scaler.key_pair_name()),
        lambda: scaler.ec2.stop_instances(InstanceIds=[state.of_role("proxy")[0].id]),
    ]
    for refused in refusals:
        with pytest.raises(botocore.exceptions.ClientError, match="AccessDenied"):
            refused()
    # (refused at its first call the scale path does not make: the groups' VPC lookup)
    with pytest.raises(CdpipeError, match=r"^AWS refused creating instances: these "
                       r"credentials may not call DescribeVpcs \(AccessDenied\)"):
        scaler.ensure(state, LAYOUT)  # type: ignore[arg-type]

    as_admin(moto, monkeypatch)
    assert len(tagged(ec2(), env)) == 4
    assert new_tags["Environment"] == env and new_tags["Role"] == "prod"
    for inst in state.of_role("prod") + state.of_role("canary"):
        raw = ec2().describe_instances(InstanceIds=[inst.id])["Reservations"][0]["Instances"][0]
        assert {"Key": "Commit", "Value": SHA} in raw["Tags"]

    # Every request of the scale path is allowed by the full policy (resources and
    # conditions), and the same requests for another environment are not.
    tags_of = {}
    for raw in ec2().describe_instances()["Reservations"]:
        for i in raw["Instances"]:
            tags_of[i["InstanceId"]] = {t["Key"]: t["Value"] for t in i.get("Tags", [])}
    for group in ec2().describe_security_groups()["SecurityGroups"]:
        tags_of[group["GroupId"]] = {t["Key"]: t["Value"] for t in group.get("Tags", [])}
    owner_of = {i["ImageId"]: i["OwnerId"] for i in ec2().describe_images(
        ImageIds=sorted({p["ImageId"] for n, p in scale_path if n == "RunInstances"}))["Images"]}
    made = iam_requests(scale_path, tags_of, str(scaler.region), owner_of)
    assert [f"{r.action} {r.resource}" for r in made if not allowed(policy, r)] == []
    foreign = {k: v | {"Environment": "env-99999999"} if "Environment" in v else v
               for k, v in tags_of.items()}
    elsewhere = iam_requests(scale_path, foreign, str(scaler.region), owner_of)
    assert {r.action for r in elsewhere if not allowed(policy, r)} == {
        "ec2:RunInstances", "ec2:CreateTags", "ec2:TerminateInstances"}

    # How many calls one scale action makes (the report's figures).
    print(f"\nscale out: {len(out_calls)} calls {out_calls}\nrecord_deployed: "
          f"{len(tag_calls)} {tag_calls}\nscale in: {len(in_calls)} {in_calls}")
    assert out_calls.count("RunInstances") == 1 and len(out_calls) <= 12
    assert in_calls.count("TerminateInstances") == 1 and len(in_calls) <= 4


class NotYetVisible:
    """run_instances of a real client that first answers as EC2 does while a new
    instance profile has not reached it (IAM is eventually consistent)."""

    def __init__(self, client: Any, times: int) -> None:
        self.real, self.times, self.calls = client.run_instances, times, 0

    def __call__(self, **kwargs: Any) -> Any:
        if "IamInstanceProfile" in kwargs:
            self.calls += 1
            if self.calls <= self.times:
                name = kwargs["IamInstanceProfile"]["Name"]
                raise botocore.exceptions.ClientError(
                    {"Error": {"Code": "InvalidParameterValue",
                               "Message": f"Value ({name}) for parameter "
                                          "iamInstanceProfile.name is invalid. Invalid IAM "
                                          "Instance Profile name"}}, "RunInstances")
        return self.real(**kwargs)


def test_a_profile_ec2_does_not_see_yet_is_retried_then_given_up_in_one_line(
        moto: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backoff, "FIRST_RETRY_DELAY", 0.05)
    provider = Ec2Provider(Settings())
    lines: list[str] = []
    provider.show = lines.append
    flaky = NotYetVisible(provider.ec2, times=2)
    monkeypatch.setattr(provider.ec2, "run_instances", flaky)
    state = State()
    provider.ensure(state, {"proxy": 1})  # type: ignore[dict-item]
    assert flaky.calls == 3 and profile_of(state.of_role("proxy")[0].id)
    retries = [line for line in lines if "is not visible to EC2 yet" in line]
    assert len(retries) == 2 and provider.scaler_name() in retries[0]

    provider.destroy_all(state)
    monkeypatch.setattr(scaler_profile, "PROFILE_WAIT_SECONDS", 0.2)
    monkeypatch.setattr(provider.ec2, "run_instances", NotYetVisible(provider.ec2, 10**6))
    with pytest.raises(CdpipeError, match=r"still calls instance profile .* invalid after "):
        provider.ensure(state, {"proxy": 1})  # type: ignore[dict-item]
    assert tagged(ec2(), state.environment) == []


def test_launching_the_proxy_without_pass_role_is_one_line(
        moto: str, monkeypatch: pytest.MonkeyPatch) -> None:
    provider = Ec2Provider(Settings())

    def refused(**kwargs: Any) -> Any:
        raise botocore.exceptions.ClientError(
            {"Error": {"Code": "UnauthorizedOperation", "Message": "You are not authorized "
                       "to perform this operation. Encoded authorization failure message: "
                       + "x" * 500}}, "RunInstances")
    monkeypatch.setattr(provider.ec2, "run_instances", refused)
    with pytest.raises(CdpipeError) as failure:
        provider.ensure(State(), {"proxy": 1})  # type: ignore[dict-item]
    message = str(failure.value)
    assert message == (f"AWS refused RunInstances with instance profile "
                       f"{provider.scaler_name()} (UnauthorizedOperation): the user running "
                       f"cdpipe needs ec2:RunInstances and iam:PassRole on role "
                       f"{provider.scaler_name()}")


def test_every_later_launch_uses_the_environments_image_not_a_newer_one(
        moto: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Once an environment has instances, a newer image that matches the settings (a
    new Debian point release) changes nothing: a scale-out, from the control machine or
    from a fresh workspace that knows only the environment's id, launches from the
    image the environment was created with, the one the scaler's policy allows."""
    provider, state, _lines = provisioned()
    first = state.image
    asked: list[str] = []

    def newer(_scope: object) -> str:
        asked.append("find_ami")
        return "ami-0newer0000000000"

    monkeypatch.setattr(images, "find_ami", newer)
    created = provider.ensure(state, LAYOUT | {"prod": 2},  # type: ignore[arg-type]
                              autoscaled=True)
    fresh = Ec2Provider(Settings())
    fresh_state = State(environment=str(state.environment), region=str(state.region),
                        provider="aws")
    fresh.attach(fresh_state)
    assert fresh.refresh(fresh_state) and fresh_state.image == first
    created += fresh.ensure(fresh_state, LAYOUT | {"prod": 3},  # type: ignore[arg-type]
                            autoscaled=True)
    described = ec2().describe_instances(InstanceIds=[i.id for i in created])
    launched = {i["ImageId"] for r in described["Reservations"] for i in r["Instances"]}
    assert len(created) == 2 and launched == {first} and asked == []
    assert fresh.scaler_policy() == provider.scaler_policy()
