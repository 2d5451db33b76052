"""Which environment a command acts on, without AWS: the EC2 provider takes the id and
region the state file records and refuses another (--env, CDPIPE_AWS_ENVIRONMENT,
CDPIPE_AWS_REGION); state files from before ids were recorded still load and act on
the old default; the local provider takes no id. And Environment records a deployed
commit with the provider only after the deploy succeeded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cdpipe import providers, secret_files
from cdpipe import state as state_mod
from cdpipe.ansible_runner import PlaybookResult
from cdpipe.config import Settings, check_environment_id
from cdpipe.environment import Environment
from cdpipe.errors import CdpipeError
from cdpipe.model import ROLES, Instance, Role, machine_ports
from cdpipe.providers.aws.provider import Ec2Provider
from cdpipe.providers.base import Provider
from cdpipe.providers.local import LocalProvider
from cdpipe.state import State

COMMIT = "c0ffee" + "0" * 34


def aws_state(**fields: Any) -> State:
    instance = Instance(id="i-0123", role="prod", host="54.1.2.3", private_address="10.0.0.5",
                        ports=machine_ports("prod"), provider="aws")
    return State(provider="aws", instances=[instance], **fields)


def test_the_recorded_environment_and_region_are_used(tmp_path: Path) -> None:
    provider = Ec2Provider(Settings(home=tmp_path, aws_region=None))
    provider.attach(aws_state(environment="env-0a1b2c3d", region="eu-west-1"))
    assert (provider.environment, provider.region) == ("env-0a1b2c3d", "eu-west-1")
    assert provider.tags("prod")["Environment"] == "env-0a1b2c3d"
    assert provider.key_pair_name() == "cdpipe-env-0a1b2c3d"
    # Asking for the same id is fine.
    provider.attach(aws_state(environment="env-0a1b2c3d", region="eu-west-1"), "env-0a1b2c3d")


@pytest.mark.parametrize(("settings", "requested", "message"), [
    ({}, "staging", "--env 'staging' is not this checkout's AWS environment 'env-0a1b2c3d'"),
    ({"aws_environment": "staging"}, None,
     "CDPIPE_AWS_ENVIRONMENT 'staging' is not this checkout's AWS environment 'env-0a1b2c3d'"),
    ({"aws_region": "us-west-2"}, None,
     "CDPIPE_AWS_REGION 'us-west-2' is not the region of this checkout's AWS environment "
     "(eu-west-1)"),
])
def test_another_environment_is_refused_with_one_line(
        tmp_path: Path, settings: dict[str, Any], requested: str | None, message: str) -> None:
    provider = Ec2Provider(Settings(home=tmp_path, **settings))
    with pytest.raises(CdpipeError) as failure:
        provider.attach(aws_state(environment="env-0a1b2c3d", region="eu-west-1"), requested)
    assert message in str(failure.value) and "\n" not in str(failure.value)


def test_nothing_recorded_takes_the_requested_id_or_none(tmp_path: Path) -> None:
    provider = Ec2Provider(Settings(home=tmp_path))
    provider.attach(State())
    assert provider.environment is None  # ensure() makes one; destroy_all removes nothing
    with pytest.raises(CdpipeError, match="no AWS environment is selected"):
        provider.tags()  # never a tag filter without the id
    provider.attach(State(), "staging")
    assert provider.environment == "staging"
    from_setting = Ec2Provider(Settings(home=tmp_path, aws_environment="qa"))
    from_setting.attach(State())
    assert from_setting.environment == "qa"


def test_a_state_file_from_before_ids_acts_on_the_old_default(tmp_path: Path) -> None:
    old = aws_state().model_dump()
    del old["environment"], old["region"]
    for instance in old["instances"]:
        del instance["private_address"]
    path = tmp_path / "state.json"
    path.write_text(json.dumps(old))
    state = state_mod.load(path)
    assert state.environment == "" and state.instances[0].internal_address == "54.1.2.3"
    provider = Ec2Provider(Settings(home=tmp_path))
    provider.attach(state)
    assert provider.environment == "prod"
    with pytest.raises(CdpipeError, match="'staging' is not this checkout's AWS environment "
                                          "'prod'"):
        provider.attach(state, "staging")


def test_the_local_provider_takes_no_environment_id(tmp_path: Path) -> None:
    provider = LocalProvider(Settings(home=tmp_path))
    provider.attach(State())
    with pytest.raises(CdpipeError, match="--env is for --provider aws"):
        provider.attach(State(), "staging")


@pytest.mark.parametrize("value", ["env-0a1b2c3d", "prod", "a", "x" * 40])
def test_good_environment_ids(value: str) -> None:
    assert check_environment_id(value, "--env") == value


@pytest.mark.parametrize("value", ["", "Prod", "env_1", "-env", "x" * 41, "a b", "env/1"])
def test_bad_environment_ids_are_one_line(value: str) -> None:
    with pytest.raises(CdpipeError) as failure:
        check_environment_id(value, "--env")
    assert str(failure.value).startswith(f"--env {value!r} is not an environment id")


def test_addresses_of_an_instance() -> None:
    ec2 = aws_state().instances[0]
    assert ec2.internal_address == "10.0.0.5"
    local = Instance(id="prod-1", role="prod", host="127.0.0.1", ports={"http": 18000},
                     provider="local")
    assert local.private_address == "" and local.internal_address == "127.0.0.1"
    provider = Ec2Provider(Settings())
    assert provider.host_vars(ec2) == {"ansible_host": "54.1.2.3", "cdpipe_address": "10.0.0.5"}


class RecordingProvider(Provider):
    """Instances in the state only; records what record_deployed saw."""

    name = "fake"

    def __init__(self, settings_file: Path) -> None:
        self.settings_file = settings_file
        self.recorded: list[dict[str, str]] = []

    def preflight(self) -> None:
        pass

    def ensure(self, state: State, wanted: dict[Role, int],
               autoscaled: bool = False) -> list[Instance]:
        return []

    def terminate(self, state: State, instance: Instance) -> None:
        state.instances = [i for i in state.instances if i.id != instance.id]

    def inventory_vars(self) -> dict[str, Any]:
        return {}

    def host_vars(self, instance: Instance) -> dict[str, Any]:
        return {}

    def record_deployed(self, state: State) -> None:
        # The state file already holds the commits when the provider records them.
        assert state_mod.load(self.settings_file).deployed == state.deployed
        self.recorded.append(dict(state.deployed))


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Environment:
    settings = Settings(home=tmp_path / "home")
    provider = RecordingProvider(settings.state_file)
    monkeypatch.setattr(providers, "get", lambda name, settings: provider)
    state = State(provider="fake", instances=[
        Instance(id=f"{role}-1", role=role, host="10.0.0.9", ports=machine_ports(role),
                 provider="fake") for role in ROLES])
    state_mod.save(settings.state_file, state)
    secret_files.ensure(settings.secrets_dir)  # made by the `up` that provisioned it
    environment = Environment(settings, show=lambda line: None)
    monkeypatch.setattr(environment, "resolve", lambda ref: ref)
    return environment


def recorded_by(env: Environment) -> list[dict[str, str]]:
    assert isinstance(env.provider, RecordingProvider)
    return env.provider.recorded


def test_a_deploy_is_recorded_with_the_provider_after_it_succeeded(
        env: Environment, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(env, "_playbook", lambda *a, **k: None)
    env.deploy(COMMIT, "canary")
    assert recorded_by(env) == [{"canary": COMMIT}]


def test_a_failed_deploy_is_not_recorded(
        env: Environment, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(playbook: str, extra: dict[str, str],
                limit: str | None = None) -> PlaybookResult:
        raise CdpipeError("deploy.yml failed on prod-1")

    monkeypatch.setattr(env, "_playbook", failing)
    with pytest.raises(CdpipeError, match=r"deploy\.yml failed"):
        env.deploy(COMMIT, None)
    assert recorded_by(env) == []
    assert state_mod.load(env.settings.state_file).deployed == {}
