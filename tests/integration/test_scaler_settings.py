"""What the scaler on the proxy machine gets from the control machine, against a moto
server: the settings that shape the environment carried over (and none of this
machine's own), and the user data that authorises the scaler's key on the machines it
creates, read back as the rig reads it (the part of cloud-init it emulates)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from cdpipe import scaler
from cdpipe.config import Settings
from cdpipe.errors import CdpipeError
from cdpipe.providers.aws.provider import Ec2Provider
from cdpipe.state import State
from rig.machines import user_data_keys
from tests.integration.test_ec2_provider import ec2


def test_the_machine_settings_carry_the_environment_not_this_machine(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CDPIPE_AWS_INSTANCE_TYPE", "t3.medium")
    monkeypatch.setenv("CDPIPE_AWS_ADMIN_CIDR", "203.0.113.7/32")
    monkeypatch.setenv("CDPIPE_AWS_EXTRA_TAGS", '{"Team": "sre"}')
    monkeypatch.setenv("CDPIPE_AWS_PRIVATE_KEY_FILE", "/home/me/.ssh/id_ed25519")
    monkeypatch.setenv("CDPIPE_AWS_MACHINE_ENVIRONMENT",
                       '{"AWS_ENDPOINT_URL": "http://172.31.0.1:5000"}')
    monkeypatch.setenv("CDPIPE_HOME", str(tmp_path / "laptop"))
    found = scaler.machine_settings(Settings(), "env-1234abcd", "eu-west-1")
    assert found["CDPIPE_AWS_INSTANCE_TYPE"] == "t3.medium"
    assert found["CDPIPE_AWS_ADMIN_CIDR"] == "203.0.113.7/32"
    assert json.loads(found["CDPIPE_AWS_EXTRA_TAGS"]) == {"Team": "sre"}
    assert (found["CDPIPE_PROVIDER"], found["CDPIPE_AWS_ENVIRONMENT"],
            found["CDPIPE_AWS_REGION"], found["CDPIPE_AWS_ADDRESS"]) == (
        "aws", "env-1234abcd", "eu-west-1", "private")
    assert found["AWS_ENDPOINT_URL"] == "http://172.31.0.1:5000"
    # This machine's own paths stay here; the role sets the machine's.
    assert not {"CDPIPE_HOME", "CDPIPE_AWS_PRIVATE_KEY_FILE", "CDPIPE_RUNTIME_DIR",
                "CDPIPE_AWS_MACHINE_ENVIRONMENT"} & set(found)
    assert not any("SECRET" in name or "PASSWORD" in name for name in found)


def test_created_instances_authorise_the_extra_key_through_user_data(
        moto: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = tmp_path / "scaler"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                   check=True)
    provider = Ec2Provider(Settings())
    provider.show = lambda line: None
    state = State(provider="aws")
    first = provider.ensure(state, {"proxy": 1, "prod": 1})
    assert all(user_data_keys(ec2(), i.id) == [] for i in first)  # from the laptop: none
    monkeypatch.setenv("CDPIPE_AWS_EXTRA_SSH_KEY_FILE", f"{key}.pub")
    provider = Ec2Provider(Settings())  # as the scaler runs it
    provider.show = lambda line: None
    provider.attach(state)
    created = provider.ensure(state, {"prod": 2}, autoscaled=True)
    assert [i.role for i in created] == ["prod"]
    assert user_data_keys(ec2(), created[0].id) == [
        Path(f"{key}.pub").read_text().strip()]


def test_a_bad_extra_key_file_is_one_line_before_anything_is_created(
        moto: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "not-a-key.pub"
    bad.write_text("hello\nworld\n")
    monkeypatch.setenv("CDPIPE_AWS_EXTRA_SSH_KEY_FILE", str(bad))
    provider = Ec2Provider(Settings())
    provider.show = lambda line: None
    with pytest.raises(CdpipeError, match="not one OpenSSH public key"):
        provider.ensure(State(provider="aws"), {"prod": 1})
    running = [i for r in ec2().describe_instances()["Reservations"] for i in r["Instances"]
               if i["State"]["Name"] in ("pending", "running")]
    assert running == []
