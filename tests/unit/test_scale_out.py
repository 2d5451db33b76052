"""Environment.scale_out without machines or Ansible: a fake provider (in-memory
instances), the scale playbook replaced by a function, the server-list update recorded.
A failed scale playbook leaves nothing half-done: the new instance leaves servers:prod,
is terminated, and is gone from the state file and the inventory."""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest
import yaml

from cdpipe import cli, deploy_record, providers, secret_files
from cdpipe import state as state_mod
from cdpipe.ansible_runner import PlaybookResult
from cdpipe.config import Settings
from cdpipe.environment import Environment
from cdpipe.errors import CdpipeError, ProviderRefused
from cdpipe.model import ROLES, Instance, Role, machine_ports
from cdpipe.providers.aws.errors import aws_error
from cdpipe.providers.base import Provider
from cdpipe.state import State

COMMIT = "c0ffee" + "0" * 34
Call = tuple[str, ...]


class FakeProvider(Provider):
    """Instances that exist only in the state; every call recorded in ``calls``."""

    name = "fake"

    def __init__(self, calls: list[Call]) -> None:
        self.calls = calls

    def preflight(self) -> None:
        pass

    def ensure(self, state: State, wanted: dict[Role, int],
               autoscaled: bool = False) -> list[Instance]:
        created = []
        for role in ROLES:
            while len(state.of_role(role)) < wanted.get(role, 0):
                number = 1 + len(state.of_role(role))
                instance = Instance(id=f"{role}-{number}", role=role,
                                    host=f"10.0.0.{10 + state.next_slot}",
                                    ports=machine_ports(role), provider=self.name,
                                    autoscaled=autoscaled)
                state.next_slot += 1
                state.instances.append(instance)
                created.append(instance)
                self.calls.append(("create", instance.id))
        return created

    def terminate(self, state: State, instance: Instance) -> None:
        self.calls.append(("terminate", instance.id))
        state.instances = [i for i in state.instances if i.id != instance.id]

    def inventory_vars(self) -> dict[str, Any]:
        return {"ansible_connection": "local"}

    def host_vars(self, instance: Instance) -> dict[str, Any]:
        return {"ansible_host": instance.host}


@pytest.fixture
def calls() -> list[Call]:
    return []


@pytest.fixture
def env(tmp_path: Path, calls: list[Call], monkeypatch: pytest.MonkeyPatch) -> Environment:
    """An environment that is up on the fake provider: one instance of each role."""
    provider = FakeProvider(calls)
    monkeypatch.setattr(providers, "get", lambda name, settings: provider)
    settings = Settings(home=tmp_path / "home", port_base=30000)
    state = State(provider="fake", deployed={"prod": COMMIT, "canary": COMMIT})
    provider.ensure(state, {role: 1 for role in ROLES})
    state_mod.save(settings.state_file, state)
    secret_files.ensure(settings.secrets_dir)  # made by the `up` that provisioned it
    calls.clear()
    environment = Environment(settings, show=lambda line: None)
    assert environment.provider is provider

    def unregister(instance_id: str) -> None:
        calls.append(("unregister", instance_id))

    monkeypatch.setattr(environment, "_unregister", unregister)
    # No Redis here: the environment lock is tests/integration/test_env_lock.py's.
    monkeypatch.setattr(environment, "_environment_lock", lambda command: nullcontext())
    return environment


def saved_ids(env: Environment) -> list[str]:
    return [i.id for i in state_mod.load(env.settings.state_file).instances]


def inventory_hosts(env: Environment) -> list[str]:
    inv = yaml.safe_load(env.settings.inventory_file.read_text())["all"]["children"]
    return [host for group in inv.values() for host in group["hosts"]]


def test_a_failed_scale_playbook_removes_the_new_instance(
        env: Environment, calls: list[Call], monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_playbook(playbook: str, extra: dict[str, str],
                         limit: str | None = None) -> PlaybookResult:
        calls.append(("playbook", playbook, extra["app_ref"], str(limit)))
        # While the playbook runs, the new instance is in the saved state (a crash
        # here still leaves a record of what to clean up).
        assert "prod-2" in saved_ids(env) and "prod-2" in inventory_hosts(env)
        raise CdpipeError("scale.yml failed on prod-2 at 'app : Wait for the new release'")

    monkeypatch.setattr(env, "_playbook", failing_playbook)
    with pytest.raises(CdpipeError) as failed:
        env.scale_out(max_count=4)
    # What became of the instance comes first (the monitor mails this line).
    assert str(failed.value) == (
        "prod-2 did not become healthy: taken out of servers:prod and terminated. Why: "
        "scale.yml failed on prod-2 at 'app : Wait for the new release'")

    assert calls == [
        ("create", "prod-2"),
        ("playbook", "scale.yml", COMMIT, "prod-2"),  # prod's commit, on the new one only
        ("unregister", "prod-2"),                      # out of servers:prod first ...
        ("terminate", "prod-2"),                       # ... then the machine goes
    ]
    assert saved_ids(env) == ["proxy-1", "redis-1", "prod-1", "canary-1"]
    assert "prod-2" not in inventory_hosts(env)
    assert state_mod.load(env.settings.state_file).deployed["prod"] == COMMIT


def test_a_good_scale_out_keeps_the_new_instance(
        env: Environment, calls: list[Call], monkeypatch: pytest.MonkeyPatch) -> None:
    def playbook(playbook: str, extra: dict[str, str], limit: str | None = None) -> Any:
        calls.append(("playbook", playbook, extra["app_ref"], str(limit)))

    monkeypatch.setattr(env, "_playbook", playbook)
    message = env.scale_out(max_count=4)
    assert message == f"scaled out: prod-2 (10.0.0.14:8000) serves {COMMIT[:12]}"
    assert calls == [("create", "prod-2"), ("playbook", "scale.yml", COMMIT, "prod-2")]
    saved = state_mod.load(env.settings.state_file)
    assert [(i.id, i.autoscaled) for i in saved.of_role("prod")] == [
        ("prod-1", False), ("prod-2", True)]


def test_at_the_maximum_nothing_is_created(
        env: Environment, calls: list[Call], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(env, "_playbook", lambda *a, **k: pytest.fail("no playbook"))
    assert env.scale_out(max_count=1) is None
    assert calls == []
    assert saved_ids(env) == ["proxy-1", "redis-1", "prod-1", "canary-1"]


def test_a_redis_error_in_the_rollback_still_removes_the_instance(
        env: Environment, calls: list[Call], monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_playbook(playbook: str, extra: dict[str, str],
                         limit: str | None = None) -> PlaybookResult:
        raise CdpipeError("scale.yml failed on prod-2")

    def unreachable(instance_id: str) -> None:
        calls.append(("unregister", instance_id))
        raise CdpipeError("cannot update servers:prod: Connection refused")

    monkeypatch.setattr(env, "_playbook", failing_playbook)
    monkeypatch.setattr(env, "_unregister", unreachable)
    with pytest.raises(CdpipeError, match=r"scale\.yml failed on prod-2"):  # not hidden
        env.scale_out(max_count=4)
    assert calls[-2:] == [("unregister", "prod-2"), ("terminate", "prod-2")]
    assert "prod-2" not in saved_ids(env)


def test_an_instance_that_cannot_be_terminated_is_said_so(
        env: Environment, calls: list[Call], monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_playbook(playbook: str, extra: dict[str, str],
                         limit: str | None = None) -> PlaybookResult:
        raise CdpipeError("scale.yml failed on prod-2")

    def refuse(state: State, instance: Instance) -> None:
        raise CdpipeError("AWS error while terminating prod-2: Throttling")

    monkeypatch.setattr(env, "_playbook", failing_playbook)
    monkeypatch.setattr(env.provider, "terminate", refuse)
    with pytest.raises(CdpipeError) as failed:
        env.scale_out(max_count=4)
    assert str(failed.value).startswith(
        "prod-2 did not become healthy and could NOT be terminated (AWS error while "
        "terminating prod-2: Throttling); remove it by hand.")
    assert "prod-2" in saved_ids(env)  # still recorded: `down` finds it


def test_the_configure_of_the_new_instance_is_in_the_deploy_history(
        env: Environment, monkeypatch: pytest.MonkeyPatch) -> None:
    """Recorded done and failed (the record itself: tests/integration/
    test_records.py); the failure's exception goes up unchanged."""
    recorded: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(deploy_record.history, "record",
                        lambda r, key, entry: recorded.append((key, json.loads(entry))))
    monkeypatch.setattr(env, "_playbook", lambda *a, **k: None)
    env.scale_out(max_count=4)

    def failing_playbook(*args: object, **kwargs: object) -> None:
        raise CdpipeError("scale.yml failed on prod-3")

    monkeypatch.setattr(env, "_playbook", failing_playbook)
    with pytest.raises(CdpipeError, match="prod-3 did not become healthy"):
        env.scale_out(max_count=4)
    assert [key for key, _ in recorded] == ["deploy:history", "deploy:history"]
    done, failed = (entry for _, entry in recorded)
    assert {k: done[k] for k in ("command", "target", "commit", "ref", "result", "error",
                                 "instance")} == {
        "command": "scale out", "target": "prod", "commit": COMMIT, "ref": COMMIT,
        "result": "ok", "error": "", "instance": "prod-2"}
    assert (failed["result"], failed["instance"]) == ("failed", "prod-3")
    assert failed["error"].startswith("prod-3 did not become healthy: taken out of "
                                      "servers:prod and terminated. Why: scale.yml failed")


@pytest.mark.parametrize(("error", "code"), [
    (ProviderRefused("AWS refused creating instances: InsufficientInstanceCapacity: x"), 4),
    (CdpipeError("prod-2 did not become healthy: taken out of servers:prod and "
                 "terminated. Why: ..."), 1)])
def test_scale_out_exits_4_when_aws_refuses_and_1_on_other_failures(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        error: CdpipeError, code: int) -> None:
    class Refusing:
        def scale_out(self, max_count: int) -> str:
            raise error

    monkeypatch.setattr(cli, "environment_for", lambda *a, **k: Refusing())
    with pytest.raises(SystemExit) as exited:
        cli.main(["scale", "out", "--max", "3"])
    assert exited.value.code == code
    assert capsys.readouterr().err.strip() == f"error: {error}"


@pytest.mark.parametrize(("aws_code", "refused"), [
    ("InsufficientInstanceCapacity", True), ("InstanceLimitExceeded", True),
    ("VcpuLimitExceeded", True), ("UnauthorizedOperation", False)])
def test_capacity_and_limits_are_a_refusal_of_their_own(aws_code: str,
                                                        refused: bool) -> None:
    exc = botocore.exceptions.ClientError(
        {"Error": {"Code": aws_code, "Message": "no"}}, "RunInstances")
    error = aws_error(exc, "creating instances")
    assert isinstance(error, ProviderRefused) is refused
    assert error.exit_code == (4 if refused else 1)
