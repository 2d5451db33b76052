"""The EC2 provider and the aws_ec2 inventory plugin against a moto server on 127.0.0.1
(no test reaches AWS)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
import requests
import yaml

from cdpipe import PROJECT_ROOT
from cdpipe.config import Settings
from cdpipe.providers.ec2 import Ec2Provider
from cdpipe.state import State
from tests.support import free_port, wait_until

BIN = Path(sys.executable).parent
XENIAL = "ubuntu/images/hvm-ssd/ubuntu-xenial-16.04-amd64-server-*"  # one of moto's AMIs
LAYOUT = {"proxy": 1, "redis": 1, "prod": 1, "canary": 1}


@pytest.fixture
def moto(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            requests.get(url + "/moto-api/", timeout=1)  # any HTTP answer: it listens
            return True
        except requests.RequestException:
            return False
    wait_until(answers, 30, "the moto server answering /moto-api/", interval=0.1)
    key = tmp_path / "id_test.pub"
    key.write_text("ssh-ed25519 "
                   "AAAAC3NzaC1lZDI1NTE5AAAAIBu2F8QmUuC1PfIQYTlwDvDPVDSNWUZOsUnhrstlTv3v test\n")
    for name, value in {
        "AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1", "CDPIPE_HOME": str(tmp_path / "home"),
        "CDPIPE_AWS_AMI_NAME_FILTER": XENIAL, "CDPIPE_AWS_ADMIN_CIDR": "203.0.113.7/32",
        "CDPIPE_AWS_PUBLIC_KEY_FILE": str(key),
    }.items():
        monkeypatch.setenv(name, value)
    yield url
    proc.terminate()
    proc.wait(10)


def ec2() -> object:
    return boto3.client("ec2", region_name="us-east-1")


def tagged(client, env: str = "prod") -> list[dict]:  # type: ignore[no-untyped-def,type-arg]
    res = client.describe_instances(Filters=[
        {"Name": "tag:Project", "Values": ["cdpipe"]},
        {"Name": "tag:Environment", "Values": [env]},
        {"Name": "instance-state-name", "Values": ["pending", "running"]}])
    return [i for r in res["Reservations"] for i in r["Instances"]]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "cdpipe"), *args], capture_output=True, text=True,
                          timeout=300, check=False, env=dict(os.environ))


def test_provision_creates_the_tagged_environment_once(moto: str) -> None:
    out = cli("provision", "--provider", "aws")
    assert out.returncode == 0, out.stderr
    client = ec2()
    instances = tagged(client)
    roles = sorted({t["Key"]: t["Value"] for t in i["Tags"]}["Role"] for i in instances)
    assert roles == ["canary", "prod", "proxy", "redis"]
    assert client.describe_key_pairs(KeyNames=["cdpipe"])["KeyPairs"]
    groups = {g["GroupName"]: g for g in client.describe_security_groups(
        Filters=[{"Name": "tag:Project", "Values": ["cdpipe"]}])["SecurityGroups"]}
    assert set(groups) == {"cdpipe-prod-proxy", "cdpipe-prod-app", "cdpipe-prod-redis"}

    def sources(group: str, port: int) -> set[str]:
        found = set()
        for perm in groups[group]["IpPermissions"]:
            if perm.get("FromPort") == port:
                found |= {r["CidrIp"] for r in perm.get("IpRanges", [])}
                found |= {p["GroupId"] for p in perm.get("UserIdGroupPairs", [])}
        return found

    ids = {name.rsplit("-", 1)[1]: g["GroupId"] for name, g in groups.items()}
    assert sources("cdpipe-prod-proxy", 80) == {"0.0.0.0/0"}
    for group in groups:
        assert sources(group, 22) == {"203.0.113.7/32"}
    assert sources("cdpipe-prod-redis", 6379) == {ids["proxy"], ids["app"]}
    assert sources("cdpipe-prod-app", 8000) == {ids["proxy"]}
    assert not any("0.0.0.0/0" in sources(g, p) for g in ("cdpipe-prod-redis", "cdpipe-prod-app")
                   for p in (6379, 8000, 22))
    # A second provision finds everything and creates nothing.
    again = cli("provision", "--provider", "aws")
    assert again.returncode == 0 and "nothing created" in again.stdout
    assert len(tagged(client)) == 4
    state = json.loads((Path(os.environ["CDPIPE_HOME"]) / "state.json").read_text())
    assert state["provider"] == "aws" and len(state["instances"]) == 4


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
    out = cli("down", "--provider", "aws")
    assert out.returncode == 0, out.stderr
    assert tagged(client) == []
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
    assert len(tagged(ec2())) == 5
    provider.terminate(state, created[0])
    assert len(tagged(ec2())) == 4 and len(state.of_role("prod")) == 1


def test_inventory_plugin_groups_instances_by_role(moto: str, tmp_path: Path) -> None:
    assert cli("provision", "--provider", "aws").returncode == 0
    config = yaml.safe_load((PROJECT_ROOT / "inventory" / "aws_ec2.yml").read_text())
    config["endpoint_url"] = moto
    inv = tmp_path / "aws_ec2.yml"
    inv.write_text(yaml.safe_dump(config))
    out = subprocess.run([str(BIN / "ansible-inventory"), "-i", str(inv), "--list"],
                         capture_output=True, text=True, timeout=120, check=False,
                         env=dict(os.environ, ANSIBLE_CONFIG=str(PROJECT_ROOT / "ansible.cfg"),
                                  ANSIBLE_INVENTORY_ENABLED="amazon.aws.aws_ec2"))
    assert out.returncode == 0, out.stderr
    listing = json.loads(out.stdout)
    for role in ("proxy", "redis", "prod", "canary"):
        assert len(listing[role]["hosts"]) == 1, (role, listing.get(role))
    host = listing["prod"]["hosts"][0]
    assert host.startswith("i-")
    value = listing["_meta"]["hostvars"][host]["cdpipe_instance_id"]
    if isinstance(value, dict):  # ansible-inventory marks templated values unsafe
        value = value["__ansible_unsafe"]
    assert value == host


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
    assert tagged(ec2()) == []
