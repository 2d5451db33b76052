"""AWS is the record of an aws environment, the state file only a cache: a second
workspace (no .cdpipe/, the same CDPIPE_AWS_ENVIRONMENT) sees, deploys to and scales
the running environment; a stale state file is corrected; secrets are never made for an
environment that exists; `status` costs one DescribeInstances. Against a moto server on
127.0.0.1 (the fixture of test_ec2_provider); the playbook runner is stubbed where a
command would run Ansible (moto's machines cannot be reached)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from cdpipe import cli
from cdpipe import environment as environment_mod
from cdpipe.ansible_runner import PlaybookResult
from cdpipe.config import Settings
from cdpipe.environment import Environment
from cdpipe.errors import CdpipeError
from cdpipe.providers.aws.tag_records import OPTION_TAG_PREFIX
from cdpipe.secret_files import DEPLOY, LOCK, NAMES
from devkit.aws_calls import Calls
from tests.integration.test_ec2_provider import cli as run_cli
from tests.integration.test_ec2_provider import (
    ec2,
    recorded,
    tagged,
)

ENV_ID = "prod"
REPO = "https://git.example.com/you/cdpipe.git"  # on AWS the machines clone a URL
OPTIONS: dict[str, str | float | int] = {"monitor_interval_seconds": 5.0,
                                         "monitor_scale_cooldown_seconds": 30,
                                         "monitor_rules_file": "/etc/cdpipe/rules.yml"}
SHARED = ("provider", "up", "environment", "region", "instances", "deployed", "options",
          "proxy")


class Playbooks:
    """Stands in for ansible-playbook: records each run with its inventory's hosts."""

    def __init__(self) -> None:
        self.runs: list[dict[str, Any]] = []

    def __call__(self, playbook: str, inventory: Path, logs_dir: Path, *,
                 extra_vars: dict[str, Any], limit: str | None = None,
                 show: Any = None) -> PlaybookResult:
        inv = yaml.safe_load(inventory.read_text(encoding="utf-8"))["all"]
        hosts = {role: sorted(group["hosts"]) for role, group in inv["children"].items()}
        self.runs.append({"playbook": playbook, "hosts": hosts, "limit": limit,
                          "extra": dict(extra_vars), "vars": inv["vars"]})
        return PlaybookResult(log_path=logs_dir / "stub.log")


@pytest.fixture
def playbooks(monkeypatch: pytest.MonkeyPatch) -> Playbooks:
    """Ansible stubbed, and the environment lock with it: moto's machines run no Redis
    (tests/integration/test_env_lock.py tests the lock on a real one)."""
    stub = Playbooks()
    monkeypatch.setattr(environment_mod, "run_playbook", stub)
    monkeypatch.setattr(environment_mod.Environment, "_environment_lock",
                        lambda self, command: nullcontext())
    return stub


@pytest.fixture
def shared(moto: str, tmp_path: Path,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every workspace of these tests names the environment as Jenkins does."""
    for name, value in {"CDPIPE_PROVIDER": "aws", "CDPIPE_AWS_ENVIRONMENT": ENV_ID,
                        "CDPIPE_APP_REPO": REPO}.items():
        monkeypatch.setenv(name, value)
    for name in NAMES:
        monkeypatch.delenv(f"CDPIPE_{name.upper()}", raising=False)
    yield


def workspace(home: Path, lines: list[str] | None = None) -> Environment:
    return Environment(Settings(home=home), show=(lines.append if lines is not None
                                                  else lambda line: None))


def status_json(home: Path) -> tuple[dict[str, Any], str]:
    out = run_cli("status", "--json", home=home)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout), out.stderr


def up_in(home: Path, playbooks: Playbooks) -> Environment:
    env = workspace(home)
    env.up("HEAD", dict(OPTIONS))
    assert playbooks.runs[-1]["playbook"] == "site.yml"
    return env


def test_a_fresh_workspace_sees_and_deploys_to_the_running_environment(
        shared: None, tmp_path: Path, playbooks: Playbooks,
        monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = tmp_path / "laptop", tmp_path / "jenkins"
    env_a = up_in(a, playbooks)
    ids = {i.id: i.role for i in env_a.state.instances}
    assert len(ids) == 4 and len(tagged(ec2(), ENV_ID)) == 4
    sha = env_a.state.deployed["prod"]
    proxy = next(i for i in tagged(ec2(), ENV_ID) if i["InstanceId"] in
                 [k for k, r in ids.items() if r == "proxy"])
    assert {t["Key"]: t["Value"] for t in proxy["Tags"]}[
        f"{OPTION_TAG_PREFIX}monitor_rules_file"] == "/etc/cdpipe/rules.yml"

    seen_a, _ = status_json(a)
    seen_b, note = status_json(b)
    assert note.strip() == (f"no state here: rebuilt environment {ENV_ID} (us-east-1) "
                            "from AWS tags: 4 instances")
    assert seen_b["up"] is True  # scripts/post_build deploys, it does not `up`
    assert {k: seen_b[k] for k in SHARED} == {k: seen_a[k] for k in SHARED}
    assert seen_b["deployed"] == {"prod": sha, "canary": sha}
    assert seen_b["options"] == OPTIONS  # types too: 5.0 stays a float, 30 an int
    cached = recorded(b)  # the rebuilt view is this workspace's cache now
    assert {i.id for i in cached.instances} == set(ids) and cached.options == OPTIONS
    assert run_cli("status", "--json", home=b).stderr == ""  # a cache now: no note

    # B deploys to A's machines, with only the secrets a deploy reads (Jenkins' bindings).
    env_b = workspace(b)
    with pytest.raises(CdpipeError) as refused:
        env_b.deploy("HEAD~1", None)
    assert str(refused.value).count("\n") == 0
    assert "secret redis_app_password is missing" in str(refused.value)
    assert "CDPIPE_REDIS_APP_PASSWORD" in str(refused.value)
    for name in DEPLOY + LOCK:
        monkeypatch.setenv(f"CDPIPE_{name.upper()}", f"bound-{name}")
    runs_before = len(playbooks.runs)
    env_b.deploy("HEAD~1", None)
    run = playbooks.runs[-1]
    assert len(playbooks.runs) == runs_before + 1 and run["playbook"] == "deploy.yml"
    assert {h: r for r, hs in run["hosts"].items() for h in hs} == ids
    assert run["limit"] == "prod,canary" and run["extra"]["app_ref"] != sha
    assert run["vars"]["monitor_interval_seconds"] == 5.0  # options reach Ansible
    assert sorted(p.name for p in (b / "secrets").iterdir()) == sorted(DEPLOY + LOCK)
    new = run["extra"]["app_ref"]
    assert len(tagged(ec2(), ENV_ID)) == 4  # no second environment
    # A sees B's deploy: the commits come from the instances' tags.
    assert status_json(a)[0]["deployed"] == {"prod": new, "canary": new}
    assert recorded(a).deployed == {"prod": new, "canary": new}


def test_a_stale_state_file_is_corrected_by_the_refresh(
        shared: None, tmp_path: Path, playbooks: Playbooks,
        monkeypatch: pytest.MonkeyPatch) -> None:
    a, proxy_machine = tmp_path / "laptop", tmp_path / "proxy-machine"
    env_a = up_in(a, playbooks)
    sha = env_a.state.deployed["prod"]
    canary = env_a.state.of_role("canary")[0].id
    # Someone else terminates the canary; the monitor, on the proxy machine with its own
    # home and only the secrets scale.yml reads, scales prod out from the tags alone.
    boto3.client("ec2").terminate_instances(InstanceIds=[canary])
    for name in DEPLOY + LOCK:
        monkeypatch.setenv(f"CDPIPE_{name.upper()}", f"bound-{name}")
    lines: list[str] = []
    on_proxy = workspace(proxy_machine, lines)
    assert lines == [f"no state here: rebuilt environment {ENV_ID} (us-east-1) from AWS "
                     "tags: 3 instances"]
    message = on_proxy.scale_out(4)
    assert message is not None and message.startswith("scaled out: ")
    added = next(i for i in on_proxy.state.of_role("prod") if i.autoscaled)
    assert playbooks.runs[-1]["playbook"] == "scale.yml"
    assert playbooks.runs[-1]["extra"]["app_ref"] == sha
    assert sorted(p.name for p in (proxy_machine / "secrets").iterdir()) == sorted(DEPLOY + LOCK)

    stale = recorded(a)
    assert canary in {i.id for i in stale.instances}
    assert added.id not in {i.id for i in stale.instances}
    seen, note = status_json(a)
    assert note == ""  # A has a state file: no note, a quiet correction
    by_id = {i["id"]: i["role"] for i in seen["instances"]}
    assert canary not in by_id and by_id[added.id] == "prod"
    assert seen["deployed"] == {"prod": sha}  # no canary runs any more
    fixed = recorded(a)
    assert [i.id for i in fixed.of_role("prod") if i.autoscaled] == [added.id]
    assert canary not in {i.id for i in fixed.instances}
    # A's scale-in would take the autoscaled instance it had not known about.
    assert [i.id for i in workspace(a).state.of_role("prod") if i.autoscaled] == [added.id]


def test_the_commit_of_instances_that_disagree_is_the_one_most_run(
        shared: None, tmp_path: Path, playbooks: Playbooks) -> None:
    """Mid-deploy, or a scale-out cut short: most instances win, a tie goes to the
    commit of the newest launch (AWS gives launch times in seconds: one second's
    launches keep their order)."""
    env = up_in(tmp_path / "a", playbooks)
    client = ec2()
    env.provider.ensure(env.state, {"prod": 3}, autoscaled=True)  # two more
    prod = [i.id for i in env.state.of_role("prod")]  # oldest launch first
    assert len(prod) == 3

    def commit(ids: list[str], value: str) -> None:
        client.create_tags(Resources=ids, Tags=[{"Key": "Commit", "Value": value}])

    commit(prod[:1], "a" * 40)
    commit(prod[1:], "b" * 40)
    assert workspace(tmp_path / "b").state.deployed["prod"] == "b" * 40  # two to one
    commit(prod[1:2], "a" * 40)
    assert workspace(tmp_path / "c").state.deployed["prod"] == "a" * 40  # two to one
    client.delete_tags(Resources=prod[:1], Tags=[{"Key": "Commit"}])
    assert workspace(tmp_path / "d").state.deployed["prod"] == "b" * 40  # tie: newest
    commit(prod[2:], "a" * 40)
    assert workspace(tmp_path / "e").state.deployed["prod"] == "a" * 40


def test_an_id_nothing_carries_is_a_new_environment(
        shared: None, tmp_path: Path, playbooks: Playbooks,
        monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "fresh"
    seen, note = status_json(home)
    assert seen["up"] is False and note == ""
    assert not (home / "state.json").exists()
    out = run_cli("deploy", "--ref", "HEAD", home=home)
    assert out.returncode == 1 and "no environment is up here" in out.stderr
    # `up` creates it, with new secrets: it is a new environment.
    env = up_in(home, playbooks)
    assert sorted(p.name for p in (home / "secrets").iterdir()) == sorted(NAMES)
    assert env.state.environment == ENV_ID and len(tagged(ec2(), ENV_ID)) == 4


def test_a_deploy_without_its_secrets_is_one_line(shared: None, tmp_path: Path,
                                                  playbooks: Playbooks) -> None:
    up_in(tmp_path / "a", playbooks)
    home = tmp_path / "b"
    (home / "secrets").mkdir(parents=True)
    (home / "secrets" / "redis_app_password").write_text("kept\n")  # a partial directory
    out = run_cli("deploy", "--ref", "HEAD", home=home)
    assert out.returncode == 1 and out.stderr.count("\n") == 1, out.stderr
    assert "secret app_user_id_secret is missing" in out.stderr
    assert f"{home / 'secrets' / 'app_user_id_secret'}" in out.stderr
    assert "CDPIPE_APP_USER_ID_SECRET" in out.stderr
    assert sorted(p.name for p in (home / "secrets").iterdir()) == ["redis_app_password"]
    # `up` of the existing environment reads every secret: refused the same way.
    out = run_cli("up", "--ref", "HEAD", home=home)
    assert out.returncode == 1 and out.stderr.count("\n") == 1, out.stderr
    assert "is missing, and this environment exists" in out.stderr
    assert len(tagged(ec2(), ENV_ID)) == 4


def test_an_option_too_long_for_a_tag_is_refused_before_anything(
        shared: None, tmp_path: Path, playbooks: Playbooks) -> None:
    env = workspace(tmp_path / "a")
    with pytest.raises(CdpipeError) as refused:
        env.up("HEAD", {"monitor_rules_file": "/" + "r" * 300})
    assert "monitor_rules_file is 301 characters long" in str(refused.value)
    assert "\n" not in str(refused.value)
    assert playbooks.runs == [] and tagged(ec2(), ENV_ID) == []


def test_status_and_a_refresh_cost_one_describe_instances(
        shared: None, tmp_path: Path, playbooks: Playbooks,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    up_in(tmp_path / "a", playbooks)
    calls = Calls(monkeypatch.setattr)
    for home in (tmp_path / "a", tmp_path / "fresh"):  # a cache, and none
        monkeypatch.setenv("CDPIPE_HOME", str(home))
        calls.names.clear()
        with pytest.raises(SystemExit) as done:
            cli.main(["status", "--json"])
        assert done.value.code == 0
        assert json.loads(capsys.readouterr().out)["up"] is True
        assert calls.names == ["DescribeInstances"], home
    # A command that takes the lock right after: still the one refresh.
    calls.names.clear()
    env = workspace(tmp_path / "a")
    with env.locked("deploy"):
        pass
    assert calls.names == ["DescribeInstances"]
