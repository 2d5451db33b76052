"""The EC2 provider and the aws_ec2 inventory plugin against a moto server on 127.0.0.1
(no test reaches AWS). The moto fixture turns the wait for SSH off (moto's addresses are
not on this machine); tests/integration/test_ec2_ssh_wait.py tests that wait."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
import pytest
import yaml

from cdpipe import PROJECT_ROOT
from cdpipe import state as state_mod
from cdpipe.config import Settings
from cdpipe.errors import CdpipeError
from cdpipe.model import Instance
from cdpipe.providers.aws import backoff, instances
from cdpipe.providers.aws.provider import Ec2Provider
from cdpipe.state import State

BIN = Path(sys.executable).parent
LAYOUT = {"proxy": 1, "redis": 1, "prod": 1, "canary": 1}


def ec2(region: str = "us-east-1") -> Any:
    return boto3.client("ec2", region_name=region)


def tagged(client: Any, env: str | None) -> list[dict[str, Any]]:
    """cdpipe's live instances of environment ``env`` (None: of any environment)."""
    filters = [{"Name": "tag:Project", "Values": ["cdpipe"]},
               {"Name": "instance-state-name", "Values": ["pending", "running"]}]
    if env is not None:
        filters.append({"Name": "tag:Environment", "Values": [env]})
    res = client.describe_instances(Filters=filters)
    return [i for r in res["Reservations"] for i in r["Instances"]]


def groups_of(client: Any, env: str) -> dict[str, dict[str, Any]]:
    return {g["GroupName"]: g for g in client.describe_security_groups(Filters=[
        {"Name": "tag:Project", "Values": ["cdpipe"]},
        {"Name": "tag:Environment", "Values": [env]}])["SecurityGroups"]}


def key_pairs(client: Any) -> set[str]:
    return {k["KeyName"] for k in client.describe_key_pairs()["KeyPairs"]}


def cli(*args: str, home: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    environ = dict(os.environ, **env)
    if home is not None:
        environ["CDPIPE_HOME"] = str(home)
    return subprocess.run([str(BIN / "cdpipe"), *args], capture_output=True, text=True,
                          timeout=300, check=False, env=environ)


def recorded(home: Path | None = None) -> State:
    """The state file of a checkout (default: the fixture's CDPIPE_HOME)."""
    return state_mod.load((home or Path(os.environ["CDPIPE_HOME"])) / "state.json")


def test_provision_creates_the_tagged_environment_once(moto: str) -> None:
    out = cli("provision", "--provider", "aws")
    assert out.returncode == 0, out.stderr
    state = recorded()
    env = state.environment
    assert re.fullmatch(r"env-[0-9a-f]{8}", env) and state.region == "us-east-1"
    assert f"new AWS environment {env} in us-east-1" in out.stdout
    client = ec2()
    instances = tagged(client, env)
    roles = sorted({t["Key"]: t["Value"] for t in i["Tags"]}["Role"] for i in instances)
    assert roles == ["canary", "prod", "proxy", "redis"]
    pair = client.describe_key_pairs(KeyNames=[f"cdpipe-{env}"])["KeyPairs"][0]
    assert {"Key": "Environment", "Value": env} in pair["Tags"]
    groups = groups_of(client, env)
    assert set(groups) == {f"cdpipe-{env}-proxy", f"cdpipe-{env}-app", f"cdpipe-{env}-redis"}
    # The control machine uses the public address (the default), the others the private.
    raw = {i["InstanceId"]: i for i in instances}
    for inst in state.instances:
        assert inst.host == raw[inst.id]["PublicIpAddress"]
        assert inst.private_address == raw[inst.id]["PrivateIpAddress"] != inst.host

    def sources(group: str, port: int) -> set[str]:
        found = set()
        for perm in groups[group]["IpPermissions"]:
            if perm.get("FromPort") == port:
                found |= {r["CidrIp"] for r in perm.get("IpRanges", [])}
                found |= {p["GroupId"] for p in perm.get("UserIdGroupPairs", [])}
        return found

    ids = {name.rsplit("-", 1)[1]: g["GroupId"] for name, g in groups.items()}
    assert sources(f"cdpipe-{env}-proxy", 80) == {"0.0.0.0/0"}
    for group in groups:
        assert sources(group, 22) == {"203.0.113.7/32"}
    assert sources(f"cdpipe-{env}-redis", 6379) == {ids["proxy"], ids["app"]}
    assert sources(f"cdpipe-{env}-app", 8000) == {ids["proxy"]}
    assert not any("0.0.0.0/0" in sources(g, p)
                   for g in (f"cdpipe-{env}-redis", f"cdpipe-{env}-app") for p in (6379, 8000, 22))
    # A second provision finds everything and creates nothing, in the same environment.
    again = cli("provision", "--provider", "aws")
    assert again.returncode == 0 and "nothing created" in again.stdout
    assert len(tagged(client, env)) == 4
    state = recorded()
    assert state.provider == "aws" and len(state.instances) == 4 and state.environment == env
    status = json.loads(cli("status", "--json").stdout)
    assert (status["environment"], status["region"]) == (env, "us-east-1")


def test_two_checkouts_in_one_account_are_independent(moto: str, tmp_path: Path) -> None:
    first, second = tmp_path / "checkout-1", tmp_path / "checkout-2"
    for home in (first, second):
        out = cli("provision", "--provider", "aws", home=home)
        assert out.returncode == 0, out.stderr
    env1, env2 = recorded(first).environment, recorded(second).environment
    assert env1 != env2
    client = ec2()
    kept = {i["InstanceId"] for i in tagged(client, env2)}
    assert len(kept) == 4 and len(tagged(client, env1)) == 4
    assert {f"cdpipe-{env1}", f"cdpipe-{env2}"} <= key_pairs(client)

    out = cli("down", home=first)  # no --provider: the state says aws
    assert out.returncode == 0, out.stderr
    assert "removed 4 instance(s)" in out.stdout
    assert tagged(client, env1) == [] and groups_of(client, env1) == {}
    assert f"cdpipe-{env1}" not in key_pairs(client)
    # The other checkout's environment is whole: instances, groups, rules, key pair.
    assert {i["InstanceId"] for i in tagged(client, env2)} == kept
    groups = groups_of(client, env2)
    assert len(groups) == 3 and all(g["IpPermissions"] for g in groups.values())
    assert f"cdpipe-{env2}" in key_pairs(client)
    assert recorded(first).environment == "" and recorded(second).environment == env2
    # The emptied checkout starts a new environment next time; the other goes on.
    assert cli("provision", "--provider", "aws", home=second).stdout.strip().endswith(
        "nothing created")


def test_an_environment_named_with_env_and_refused_when_it_is_not_this_one(
        moto: str, tmp_path: Path) -> None:
    out = cli("provision", "--provider", "aws", "--env", "staging")
    assert out.returncode == 0, out.stderr
    assert recorded().environment == "staging" and len(tagged(ec2(), "staging")) == 4
    for refused in (cli("down", "--env", "other"),
                    cli("down", CDPIPE_AWS_ENVIRONMENT="other")):
        assert refused.returncode == 1 and refused.stderr.count("\n") == 1, refused.stderr
        assert "'other' is not this checkout's AWS environment 'staging'" in refused.stderr
    assert len(tagged(ec2(), "staging")) == 4  # nothing was touched
    bad = cli("up", "--provider", "aws", "--env", "Not_An_Id")
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1
    assert "--env 'Not_An_Id' is not an environment id" in bad.stderr
    # A checkout that lost its state file can still remove an environment by its id.
    out = cli("down", "--provider", "aws", "--env", "staging", home=tmp_path / "elsewhere")
    assert out.returncode == 0, out.stderr
    assert tagged(ec2(), "staging") == [] and groups_of(ec2(), "staging") == {}
    nothing = cli("down", "--provider", "aws", home=tmp_path / "empty")
    assert nothing.returncode == 0 and "nothing to remove" in nothing.stdout


def test_a_state_file_without_an_environment_id_still_works(moto: str) -> None:
    """State files written before ids were recorded: their instances carry the old
    default Environment tag, prod."""
    provider = Ec2Provider(Settings(aws_environment="prod"))
    state = State()
    provider.ensure(state, {"prod": 1})  # type: ignore[arg-type]
    legacy = state.model_dump()
    del legacy["environment"], legacy["region"]
    home = Path(os.environ["CDPIPE_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    (home / "state.json").write_text(json.dumps(legacy))
    out = cli("down")
    assert out.returncode == 0, out.stderr
    assert "removed 1 instance(s)" in out.stdout and tagged(ec2(), "prod") == []


def test_down_removes_only_this_environment(moto: str) -> None:
    client = ec2()
    stranger = client.run_instances(ImageId=client.describe_images(
        Owners=["099720109477"])["Images"][0]["ImageId"], MinCount=1, MaxCount=1,
        InstanceType="t3.micro")["Instances"][0]["InstanceId"]
    other_env = client.run_instances(
        ImageId=client.describe_images(Owners=["099720109477"])["Images"][0]["ImageId"],
        MinCount=1, MaxCount=1, TagSpecifications=[{"ResourceType": "instance", "Tags": [
            {"Key": "Project", "Value": "cdpipe"}, {"Key": "Environment", "Value": "staging"},
            {"Key": "Role", "Value": "prod"}]}])["Instances"][0]["InstanceId"]
    assert cli("provision", "--provider", "aws").returncode == 0
    env = recorded().environment
    out = cli("down", "--provider", "aws")
    assert out.returncode == 0, out.stderr
    assert tagged(client, env) == []
    states = {i["InstanceId"]: i["State"]["Name"] for r in client.describe_instances()[
        "Reservations"] for i in r["Instances"]}
    assert states[stranger] == "running" and states[other_env] == "running"
    assert not client.describe_security_groups(
        Filters=[{"Name": "tag:Project", "Values": ["cdpipe"]}])["SecurityGroups"]


def test_scale_out_and_in_through_the_provider(moto: str, tmp_path: Path) -> None:
    provider = Ec2Provider(Settings())
    state = State()
    provider.ensure(state, LAYOUT)  # type: ignore[arg-type]
    created = provider.ensure(state, {"prod": 2}, autoscaled=True)
    assert len(created) == 1 and created[0].role == "prod" and created[0].autoscaled
    assert len(tagged(ec2(), state.environment)) == 5
    provider.terminate(state, created[0])
    assert len(tagged(ec2(), state.environment)) == 4 and len(state.of_role("prod")) == 1


class DependencyViolations:
    """delete_security_group of a real client that first answers DependencyViolation
    ``times`` times (what AWS does while terminated instances' interfaces linger)."""

    def __init__(self, client: Any, times: int) -> None:
        self.real, self.times, self.calls = client.delete_security_group, times, 0

    def __call__(self, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls <= self.times:
            raise botocore.exceptions.ClientError(
                {"Error": {"Code": "DependencyViolation",
                           "Message": f"resource {kwargs['GroupId']} has a dependent object"}},
                "DeleteSecurityGroup")
        return self.real(**kwargs)


@pytest.fixture
def provisioned(moto: str, monkeypatch: pytest.MonkeyPatch) -> tuple[Ec2Provider, State,
                                                                     list[str]]:
    monkeypatch.setattr(backoff, "FIRST_RETRY_DELAY", 0.05)
    provider = Ec2Provider(Settings())
    lines: list[str] = []
    provider.show = lines.append
    state = State()
    provider.ensure(state, {"prod": 1})  # type: ignore[arg-type]
    return provider, state, lines


def test_down_retries_a_group_still_in_use(
        provisioned: tuple[Ec2Provider, State, list[str]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    provider, state, lines = provisioned
    flaky = DependencyViolations(provider.ec2, times=2)
    monkeypatch.setattr(provider.ec2, "delete_security_group", flaky)
    removed = provider.destroy_all(state)
    assert len(removed) == 1 and state.instances == []
    assert flaky.calls == 3 + 2  # three groups, the first refused twice
    assert groups_of(ec2(), state.environment) == {}
    assert tagged(ec2(), state.environment) == []
    retries = [line for line in lines if "still in use; retrying" in line]
    assert len(retries) == 2 and f"cdpipe-{state.environment}-" in retries[0]


def test_down_gives_up_on_a_group_in_use_with_one_line(
        provisioned: tuple[Ec2Provider, State, list[str]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    provider, state, _lines = provisioned
    provider.settings.aws_delete_wait_seconds = 0.5
    monkeypatch.setattr(provider.ec2, "delete_security_group",
                        DependencyViolations(provider.ec2, times=10**6))
    with pytest.raises(CdpipeError) as failure:
        provider.destroy_all(state)
    message = str(failure.value)
    assert "\n" not in message
    assert re.search(rf"security group cdpipe-{state.environment}-\w+ \(sg-\w+\) is still "
                     r"in use after 0 s \(DependencyViolation\)", message), message
    assert tagged(ec2(), state.environment) == []  # the instances went, the groups stay
    assert len(groups_of(ec2(), state.environment)) == 3


def test_private_addresses_for_a_control_machine_inside_the_vpc(
        moto: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDPIPE_AWS_ADDRESS", "private")
    provider = Ec2Provider(Settings())
    state = State()
    created = provider.ensure(state, {"redis": 1})  # type: ignore[arg-type]
    raw = tagged(ec2(), state.environment)[0]
    assert created[0].host == created[0].private_address == raw["PrivateIpAddress"]
    assert provider.host_vars(created[0]) == {"ansible_host": raw["PrivateIpAddress"],
                                              "cdpipe_address": raw["PrivateIpAddress"]}


def test_no_public_address_is_one_line_and_leaves_no_instance(
        moto: str, monkeypatch: pytest.MonkeyPatch) -> None:
    client = ec2()
    vpc = client.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"][0]
    subnet = client.create_subnet(VpcId=vpc["VpcId"], CidrBlock="172.31.192.0/20")["Subnet"]
    assert not subnet["MapPublicIpOnLaunch"]
    monkeypatch.setenv("CDPIPE_AWS_SUBNET_ID", subnet["SubnetId"])
    out = cli("provision", "--provider", "aws")
    assert out.returncode == 1 and out.stderr.count("\n") == 1, out.stderr
    assert re.search(r"i-\w+ \(\w+\) has no public IP address; .*"
                     r"set CDPIPE_AWS_ADDRESS=private", out.stderr), out.stderr
    env = recorded().environment
    assert env and tagged(client, env) == []  # the instances it made are terminated
    again = cli("provision", "--provider", "aws", CDPIPE_AWS_ADDRESS="private")
    assert again.returncode == 0, again.stderr
    assert recorded().environment == env and len(tagged(client, env)) == 4


def test_instances_whose_ssh_never_answers_are_removed(
        moto: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The wait for SSH inside ensure, on a silent server on 127.0.0.1 standing in for
    the new machines (moto's addresses are not reachable)."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # accepts (the kernel does) and never says a word
        monkeypatch.setenv("CDPIPE_AWS_SSH_WAIT_SECONDS", "1")
        provider = Ec2Provider(Settings())
        provider.ssh_port = silent.getsockname()[1]
        real = instances.to_instance

        def on_loopback(settings: Settings, raw: dict[str, Any]) -> Instance:
            return real(settings, raw).model_copy(update={"host": "127.0.0.1"})

        monkeypatch.setattr(instances, "to_instance", on_loopback)
        state = State()
        with pytest.raises(CdpipeError, match=r"^i-\w+ at 127\.0\.0\.1: SSH did not "
                                              r"answer within 1 s \(nor did 1 more\);"
                                              r".*; the new instance\(s\) i-\w+, i-\w+ "
                                              r"were terminated$"):
            provider.ensure(state, {"prod": 1, "canary": 1})  # type: ignore[arg-type]
    assert tagged(ec2(), state.environment) == [] and state.instances == []


def inventory(moto: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``ansible-inventory --list`` of inventory/aws_ec2.yml as it is, pointed at moto."""
    config = yaml.safe_load((PROJECT_ROOT / "inventory" / "aws_ec2.yml").read_text())
    config["endpoint_url"] = moto
    inv = tmp_path / "aws_ec2.yml"
    inv.write_text(yaml.safe_dump(config))
    environ = {k: v for k, v in os.environ.items()
               if k not in ("CDPIPE_AWS_ENVIRONMENT", "CDPIPE_AWS_REGION", "CDPIPE_AWS_ADDRESS")}
    return subprocess.run([str(BIN / "ansible-inventory"), "-i", str(inv), "--list"],
                          capture_output=True, text=True, timeout=120, check=False,
                          env=environ | env | {
                              "ANSIBLE_CONFIG": str(PROJECT_ROOT / "ansible.cfg"),
                              "ANSIBLE_INVENTORY_ENABLED": "amazon.aws.aws_ec2"})


def listed(out: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert out.returncode == 0, out.stderr
    listing: dict[str, Any] = json.loads(out.stdout)
    return listing


def hostvar(listing: dict[str, Any], host: str, name: str) -> Any:
    value = listing["_meta"]["hostvars"][host].get(name)
    if isinstance(value, dict):  # ansible-inventory marks templated values unsafe
        value = value["__ansible_unsafe"]
    return value


def test_inventory_plugin_takes_the_environment_from_variables_and_refs_from_tags(
        moto: str, tmp_path: Path) -> None:
    """Two environments: one in eu-west-1 (this test's), one in us-east-1 (the AWS_REGION
    of the process); the inventory shows the one CDPIPE_AWS_ENVIRONMENT and
    CDPIPE_AWS_REGION name, each app host with app_ref from its Commit tag."""
    home = tmp_path / "eu"
    out = cli("provision", "--provider", "aws", home=home, CDPIPE_AWS_REGION="eu-west-1")
    assert out.returncode == 0, out.stderr
    assert cli("provision", "--provider", "aws").returncode == 0
    other = recorded().environment
    state = recorded(home)
    assert state.region == "eu-west-1"
    prod_ref, canary_ref = "a" * 40, "b" * 40
    state.deployed = {"prod": prod_ref, "canary": canary_ref}
    provider = Ec2Provider(Settings(home=home))
    provider.attach(state)
    provider.record_deployed(state)  # what cdpipe does after a successful deploy

    listing = listed(inventory(moto, tmp_path, CDPIPE_AWS_ENVIRONMENT=state.environment,
                               CDPIPE_AWS_REGION="eu-west-1"))
    raw = {i["InstanceId"]: i for i in tagged(ec2("eu-west-1"), state.environment)}
    for role in ("proxy", "redis", "prod", "canary"):
        assert len(listing[role]["hosts"]) == 1, (role, listing.get(role))
    assert set(listing["_meta"]["hostvars"]) == set(raw)
    for host in raw:
        assert hostvar(listing, host, "cdpipe_instance_id") == host
        assert hostvar(listing, host, "ansible_host") == raw[host]["PublicIpAddress"]
        assert hostvar(listing, host, "cdpipe_address") == raw[host]["PrivateIpAddress"]
    assert hostvar(listing, listing["prod"]["hosts"][0], "app_ref") == prod_ref
    assert hostvar(listing, listing["canary"]["hosts"][0], "app_ref") == canary_ref
    assert hostvar(listing, listing["proxy"]["hosts"][0], "app_ref") is None

    inside = listed(inventory(moto, tmp_path, CDPIPE_AWS_ENVIRONMENT=state.environment,
                              CDPIPE_AWS_REGION="eu-west-1", CDPIPE_AWS_ADDRESS="private"))
    for host in raw:
        assert hostvar(inside, host, "ansible_host") == raw[host]["PrivateIpAddress"]
    # Without CDPIPE_AWS_REGION, AWS_REGION (us-east-1): the other environment's hosts.
    elsewhere = listed(inventory(moto, tmp_path, CDPIPE_AWS_ENVIRONMENT=other))
    assert set(elsewhere["_meta"]["hostvars"]) == {
        i["InstanceId"] for i in tagged(ec2(), other)}
    # No environment named: no inventory, and the reason.
    unnamed = inventory(moto, tmp_path)
    assert "set CDPIPE_AWS_ENVIRONMENT to the environment id" in unnamed.stderr, unnamed.stderr
    assert not json.loads(unnamed.stdout or "{}").get("_meta", {}).get("hostvars")


@pytest.mark.parametrize(("env", "message"), [
    ({"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None,
      "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent", "AWS_CONFIG_FILE": "/nonexistent"},
     "AWS credentials not found"),
    ({"AWS_REGION": "mars-north-1", "AWS_DEFAULT_REGION": "mars-north-1"},
     "unknown AWS region 'mars-north-1'"),
    ({"CDPIPE_AWS_AMI_NAME_FILTER": "no-such-image-*"}, "no AMI named 'no-such-image-*'"),
    ({"CDPIPE_AWS_ADMIN_CIDR": "0.0.0.0/0"}, "must not be the whole internet"),
])
def test_errors_are_one_line_and_create_nothing(
        moto: str, monkeypatch: pytest.MonkeyPatch, env: dict[str, str | None],
        message: str) -> None:
    for name, value in env.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    out = cli("provision", "--provider", "aws")
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1 and message in out.stderr, out.stderr
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    assert tagged(ec2(), None) == []
    # What a failed first provision made before it failed (a key pair, groups) is
    # recorded with its environment's id, so that `down` removes it.
    assert cli("down").returncode == 0
    assert not ec2().describe_security_groups(
        Filters=[{"Name": "tag:Project", "Values": ["cdpipe"]}])["SecurityGroups"]
    assert not [k for k in key_pairs(ec2()) if k.startswith("cdpipe-")]
