"""The AWS path end to end over SSH: `cdpipe up --provider aws` on the rig's Debian
machines, traffic through the proxy machine, the operator's redis-cli through an SSH
tunnel, services as their own users, and a canary deploy and promote under load.
Tests run in file order on one environment (test_self_scaling.py next, the dead machine
of test_z_dead_machine.py last)."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
import requests

from cdpipe import PROJECT_ROOT
from cdpipe.config import Settings
from cdpipe.providers.aws.iam_policy import scaler_name
from devkit.ports import free_port
from rig.podman import podman
from tests.e2e.load import Load, count_requests, share
from tests.iam_eval import Request, allowed, resource_tags
from tests.machines.conftest import SSH_OPTIONS, MachinesEnv
from tests.machines.private_git import private_git_server
from tests.support import wait_until


@contextlib.contextmanager
def tunnel(env: MachinesEnv, target: str, what: str) -> Iterator[int]:
    """An SSH tunnel through the proxy machine to ``target`` (host:port as the proxy
    machine sees it); yields the local port."""
    port = free_port()
    proc = subprocess.Popen(["ssh", *SSH_OPTIONS, "-i", str(env.key), "-N",
                             "-L", f"127.0.0.1:{port}:{target}",
                             f"admin@{env.address('proxy')}"])

    def listening() -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0
    try:
        wait_until(listening, 30, f"the SSH tunnel to {what}")
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


@contextlib.contextmanager
def redis_tunnel(env: MachinesEnv) -> Iterator[int]:
    """The README's way for an operator: an SSH tunnel through the proxy machine to
    Redis' private address; yields the local port."""
    with tunnel(env, f"{env.address('redis')}:6379", "Redis") as port:
        yield port


def redis_password(env: MachinesEnv, user: str) -> str:
    return (env.home / "secrets" / f"redis_{user}_password").read_text().strip()


def redis_cli(env: MachinesEnv, port: int, *args: str, user: str = "operator") -> str:
    """redis-cli as the README shows it: --user, the password in REDISCLI_AUTH."""
    out = subprocess.run(["redis-cli", "--user", user, "-p", str(port), *args],
                         capture_output=True, text=True, timeout=30, check=False,
                         env={"REDISCLI_AUTH": redis_password(env, user),
                              "PATH": "/usr/bin:/bin"})
    return (out.stdout + out.stderr).strip()


def status_of(url: str) -> int:
    try:
        return requests.get(url, timeout=5).status_code
    except requests.RequestException:
        return 0


def test_up_from_nothing_converges_and_a_second_run_changes_nothing(
        deployed: MachinesEnv) -> None:
    assert "waiting up to" in deployed.outputs["first up"]  # it waited for SSH
    assert re.search(r"site\.yml: 0 changed", deployed.outputs["second up"]), (
        deployed.outputs["second up"])
    report = deployed.status()
    assert report["provider"] == "aws"
    assert sorted(i["role"] for i in report["instances"]) == [
        "canary", "prod", "proxy", "redis"]
    assert all(i["healthy"] for i in report["instances"]), report["instances"]
    apps = {i["role"]: i["version"] for i in report["instances"]
            if i["role"] in ("prod", "canary")}
    assert apps == {"prod": deployed.new, "canary": deployed.new}
    for instance in report["instances"]:
        assert instance["url"].split("//")[1].startswith("172.31.")  # the private address


def test_the_readme_laptop_command_converges_through_the_aws_inventory(
        deployed: MachinesEnv) -> None:
    """README, AWS: with the environment's id and region exported,
    `ansible-playbook -i inventory/aws_ec2.yml playbooks/site.yml` finds the machines by
    their tags, each app group's commit by its Commit tag, and changes nothing."""
    report = deployed.status()
    env = deployed.env | {"CDPIPE_AWS_ENVIRONMENT": report["environment"],
                          "CDPIPE_AWS_REGION": report["region"]}
    out = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", "inventory/aws_ec2.yml",
         "playbooks/site.yml"], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
        timeout=900, check=False)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    recap = re.findall(r"^(i-\w+)\s+: ok=\d+\s+changed=(\d+)\s+unreachable=0\s+failed=0",
                       out.stdout, re.MULTILINE)
    assert sorted(host for host, _ in recap) == sorted(
        i["id"] for i in report["instances"])
    changed_tasks, task = [], ""
    for line in out.stdout.splitlines():
        task = line if line.startswith("TASK [") else task
        if line.startswith("changed:"):
            changed_tasks.append(f"{task} {line}")
    assert {changed for _, changed in recap} == {"0"}, "\n".join(changed_tasks)


def test_services_run_as_their_own_users(deployed: MachinesEnv) -> None:
    def users(role: str, pattern: str) -> set[str]:
        out = deployed.ssh(deployed.address(role), "ps -eo user:20,args")
        return {line.split()[0] for line in out.splitlines()[1:]
                if pattern in line and "ps -eo" not in line}

    assert users("redis", "redis-server") == {"redis"}
    assert users("prod", "gunicorn") == {"cdpipe"}
    assert users("canary", "gunicorn") == {"cdpipe"}
    assert users("proxy", "cdpipe_host.proxy") == {"haproxy"}
    assert users("proxy", "monitoring.monitor") == {"cdpipe"}
    assert users("redis", "cdpipe_host.metrics_agent") == {"cdpipe"}
    # HAProxy's master binds port 80 as root; the workers that serve run as haproxy.
    assert users("proxy", "-f /opt/cdpipe/haproxy/haproxy.cfg") == {"root", "haproxy"}
    redis_host = deployed.address("redis")
    assert deployed.ssh(redis_host, "sudo systemctl is-enabled redis-server",
                        check=False).strip() == "masked"
    assert deployed.ssh(deployed.address("proxy"), "sudo systemctl is-enabled haproxy",
                        check=False).strip() == "masked"


def test_redis_listens_on_private_and_loopback_only_with_the_password(
        deployed: MachinesEnv) -> None:
    redis_host = deployed.address("redis")
    listening = deployed.ssh(redis_host, "ss -Hltn 'sport = :6379'")
    bound = sorted(line.split()[3] for line in listening.splitlines() if line.strip())
    assert bound == sorted(["127.0.0.1:6379", f"{redis_host}:6379"])
    # Without the password the server refuses (the machines' own redis-cli).
    refused = deployed.ssh(redis_host, "redis-cli -h 127.0.0.1 -p 6379 GET flag:x 2>&1")
    assert "NOAUTH" in refused


def test_operator_flips_a_flag_with_redis_cli_through_an_ssh_tunnel(
        deployed: MachinesEnv) -> None:
    proxy = f"http://{deployed.address('proxy')}"
    with redis_tunnel(deployed) as port:
        assert redis_cli(deployed, port, "SET", "flag:hiddenfeature", "on") == "OK"
        wait_until(lambda: status_of(proxy + "/hiddenfeature") == 200, 20,
                   "/hiddenfeature answering 200 through the proxy")
        assert redis_cli(deployed, port, "SET", "flag:hiddenfeature", "off") == "OK"
        wait_until(lambda: status_of(proxy + "/hiddenfeature") == 404, 20,
                   "/hiddenfeature answering 404 again")
        # The apps' user reads flags and may write nothing.
        assert "NOPERM" in redis_cli(deployed, port, "HSET", "servers:prod", "x", "10.0.0.9:80",
                                     user="app")
        assert "NOPERM" in redis_cli(deployed, port, "FLUSHALL", user="app")


@pytest.mark.parametrize(("role", "users"), [
    ("canary", {"app"}), ("prod", {"app"}), ("redis", set()),
    ("proxy", {"controller", "deployer", "monitor", "app", "operator"})])
def test_each_machine_holds_only_its_redis_credentials(deployed: MachinesEnv, role: str,
                                                       users: set[str]) -> None:
    """The canary machine holds no credential that may write servers:* (only the app
    user's); Redis' machine holds hashes only; the deployer's file is root's. The proxy
    machine's scaler holds the app's password too (scale.yml writes it on the machines
    it creates) and the operator's (the dashboard's login), readable by the scaler's
    user only; no machine holds the admin's."""
    found = set()
    for user in ("admin", "operator", "deployer", "controller", "monitor", "app"):
        hit = deployed.ssh(deployed.address(role), (
            f"sudo grep -rlF -e '{redis_password(deployed, user)}' /opt/cdpipe /etc/supervisor "
            "--exclude-dir=venv --exclude-dir=.venv --exclude-dir=venvs --exclude-dir=.git "
            "|| true"))
        if hit.strip():
            found.add(user)
    assert found == users
    if role == "proxy":
        owner = deployed.ssh(deployed.address(role),
                             "sudo stat -c '%U %a' /opt/cdpipe/haproxy/deployer.json")
        assert owner.strip() == "root 600"
        scaler = deployed.ssh(deployed.address(role), (
            "sudo stat -c '%n %U %a' /opt/cdpipe/scaler/home "
            "/opt/cdpipe/scaler/home/secrets/redis_app_password"))
        assert scaler.split() == ["/opt/cdpipe/scaler/home", "cdpipe-scaler", "700",
                                  "/opt/cdpipe/scaler/home/secrets/redis_app_password",
                                  "cdpipe-scaler", "600"]


def test_the_dashboard_on_the_proxy_machine_through_an_ssh_tunnel(
        deployed: MachinesEnv) -> None:
    """The page runs on the proxy machine as its own user, on its loopback only; that
    user cannot read the scaler's SSH key nor its secrets, and may run as the scaler
    only its actor's three commands (sudo -l answers without running them). Through a
    tunnel the operator reads the environment (the state through the actor) and,
    logged in, flips a flag that the proxy then serves, and the open stream shows it."""
    proxy_host = deployed.address("proxy")
    out = deployed.ssh(proxy_host, "ps -eo user:20,args")
    assert {line.split()[0] for line in out.splitlines()
            if "cdpipe.cli dashboard" in line and "ps -eo" not in line} == {"cdpipe-dashboard"}
    reads = deployed.ssh(proxy_host, (
        "for f in /opt/cdpipe/scaler/home/id_ed25519 "
        "/opt/cdpipe/scaler/home/secrets/redis_app_password; do "
        "sudo -u cdpipe-dashboard cat $f >/dev/null 2>&1 && echo read || echo refused; done"))
    assert reads.split() == ["refused", "refused"]
    may = {args: deployed.ssh(proxy_host, (
        "sudo -u cdpipe-dashboard sudo -n -l -u cdpipe-scaler "
        f"/opt/cdpipe/scaler/dashboard-act {args} >/dev/null 2>&1 && echo allowed "
        "|| echo refused")).strip()
        for args in ("state", "canary promote", "canary rollback", "canary deploy",
                     "state --json")}
    assert may == {"state": "allowed", "canary promote": "allowed",
                   "canary rollback": "allowed", "canary deploy": "refused",
                   "state --json": "refused"}
    listening = deployed.ssh(proxy_host, "ss -Hltn 'sport = :8099'")
    assert [line.split()[3] for line in listening.splitlines() if line.strip()] == [
        "127.0.0.1:8099"]
    proxy = f"http://{proxy_host}"
    with tunnel(deployed, "127.0.0.1:8099", "the dashboard") as port:
        base = f"http://127.0.0.1:{port}"
        state = requests.get(base + "/api/state", timeout=10).json()
        assert sorted(i["role"] for i in state["instances"]) == [
            "canary", "prod", "proxy", "redis"]
        assert {i["commit"] for i in state["instances"] if i["role"] in ("prod", "canary")
                } == {deployed.new}
        with requests.Session() as s, requests.get(base + "/events", stream=True,
                                                   timeout=30) as stream:
            login = s.post(base + "/api/login",
                           json={"password": redis_password(deployed, "operator")},
                           timeout=10)
            assert login.status_code == 200
            done = s.post(base + "/api/flag", json={"name": "hiddenfeature", "value": "on"},
                          headers={"X-CSRF-Token": login.json()["csrf"]}, timeout=10)
            assert done.json() == {"message": "flag:hiddenfeature = on"}
            wait_until(lambda: status_of(proxy + "/hiddenfeature") == 200, 20,
                       "/hiddenfeature answering 200 through the proxy")
            seen, deadline = "", time.monotonic() + 30  # heartbeats come every 15 s
            for line in stream.iter_lines(decode_unicode=True):
                seen = line if '"hiddenfeature":"on"' in line else seen
                if seen or time.monotonic() > deadline:
                    break
            assert seen, "the open stream never showed flag:hiddenfeature = on"
            s.post(base + "/api/flag", json={"name": "hiddenfeature", "value": "off"},
                   headers={"X-CSRF-Token": login.json()["csrf"]}, timeout=10)
    wait_until(lambda: status_of(proxy + "/hiddenfeature") == 404, 20,
               "/hiddenfeature answering 404 again")


def test_code_is_roots_and_the_scale_rule_takes_only_bounded_commands(
        deployed: MachinesEnv) -> None:
    """Code unpacked on the machines is root's whatever ids the control machine's
    archive carries; the monitor's user may run the scale command as the scaler only
    as `out` or `in` with a --max from 1 to 20 (and --help, the role's check)."""
    for role in ("proxy", "redis", "prod"):
        foreign = deployed.ssh(deployed.address(role), (
            "sudo find /opt/cdpipe/code /opt/cdpipe/scaler/project "
            "\\( ! -user root -o ! -group root \\) -print 2>/dev/null | head -5"))
        assert foreign.strip() == "", (role, foreign)
    outcomes = {}
    for args in ("--help", "status", "out --max 21", "out --max 0", "in --max 4 --dry"):
        outcomes[args] = deployed.ssh(deployed.address("proxy"), (
            f"sudo -u cdpipe sudo -n -u cdpipe-scaler /opt/cdpipe/scaler/scale {args} "
            ">/dev/null 2>&1 && echo allowed || echo refused")).strip()
    assert outcomes == {"--help": "allowed", "status": "refused", "out --max 21": "refused",
                        "out --max 0": "refused", "in --max 4 --dry": "refused"}


METADATA_PROBE = """
import sys, urllib.error, urllib.request
try:
    urllib.request.urlopen(sys.argv[1], timeout=10)
    print("reached")
except urllib.error.HTTPError:
    print("reached")
except (urllib.error.URLError, OSError):
    print("refused")
"""


def test_only_root_and_the_scaler_reach_the_metadata_service(deployed: MachinesEnv) -> None:
    """The instance profile's credentials: the proxy machine's firewall lets root and
    the scaler's user reach the metadata service, and refuses HAProxy's, the monitor's,
    the controller's and the dashboard's users (the rig's stand-in answers at the endpoint cdpipe's
    machine settings name)."""
    url = deployed.rig.machine_moto_url + "/latest/meta-data/iam/security-credentials/"
    proxy = deployed.address("proxy")
    deployed.ssh(proxy, f"cat > /tmp/metadata_probe.py <<'EOF'\n{METADATA_PROBE}\nEOF")
    seen = {user: deployed.ssh(proxy, f"sudo -u {user} python3 /tmp/metadata_probe.py {url}"
                                      ).strip()
            for user in ("root", "cdpipe-scaler", "haproxy", "cdpipe", "cdpipe-dashboard")}
    assert seen == {"root": "reached", "cdpipe-scaler": "reached", "haproxy": "refused",
                    "cdpipe": "refused", "cdpipe-dashboard": "refused"}


def test_the_installed_policy_refuses_to_terminate_what_up_made(deployed: MachinesEnv) -> None:
    """The scaler's policy as IAM holds it for this environment, evaluated by IAM's rules
    (tests/iam_eval.py) against each machine's tags: a terminate of the Redis machine,
    the proxy, the canary or the prod machine `up` made is refused; only an autoscaled
    prod instance (tags set only at launch) may be terminated."""
    report = deployed.status()
    environment, region = report["environment"], report["region"]
    clients = {"endpoint_url": deployed.env["AWS_ENDPOINT_URL"], "region_name": region,
               "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    name = scaler_name(deployed.env.get("CDPIPE_AWS_PROJECT",
                                        Settings.model_fields["aws_project"].default),
                       environment)
    document = boto3.client("iam", **clients).get_role_policy(
        RoleName=name, PolicyName=name)["PolicyDocument"]
    policy = json.loads(document) if isinstance(document, str) else document
    pages = boto3.client("ec2", **clients).get_paginator("describe_instances").paginate(
        Filters=[{"Name": "tag:Environment", "Values": [environment]},
                 {"Name": "instance-state-name", "Values": ["running"]}])
    verdicts = {}
    for page in pages:
        for reservation in page["Reservations"]:
            for raw in reservation["Instances"]:
                tags = {t["Key"]: t["Value"] for t in raw.get("Tags", [])}
                arn = f"arn:aws:ec2:{region}:123456789012:instance/{raw['InstanceId']}"
                role = tags["Role"] + (" (autoscaled)" if tags.get("Autoscaled") else "")
                verdicts[role] = allowed(policy, Request("ec2:TerminateInstances", arn,
                                                         resource_tags(tags)))
                if tags["Role"] == "prod" and not tags.get("Autoscaled"):
                    verdicts["prod, were it autoscaled"] = allowed(policy, Request(
                        "ec2:TerminateInstances", arn,
                        resource_tags(tags | {"Autoscaled": "true"})))
    assert verdicts == {"redis": False, "proxy": False, "canary": False, "prod": False,
                        "prod, were it autoscaled": True}


def test_split_and_the_kill_switch_through_the_proxy_machine(deployed: MachinesEnv) -> None:
    proxy = f"http://{deployed.address('proxy')}/"
    samples = count_requests(proxy, 600)
    assert [s for s in samples if s.status != 200] == []
    assert abs(share(samples, "canary") - 1 / 3) <= 0.06  # 2:1
    with redis_tunnel(deployed) as port:
        redis_cli(deployed, port, "SET", "canary:alert", "on")
        try:
            with Load(proxy, threads=4, max_seconds=60) as load:
                wait_until(lambda: [s.role for s in load.samples[-50:]].count("canary") == 0
                           and len(load.samples) > 50, 30, "no canary answer any more")
                off = time.monotonic()
                wait_until(lambda: len(load.since(off)) >= 100, 30, "100 more answers")
            assert [s for s in load.since(off) if s.role == "canary"] == []
            assert load.failures() == []
        finally:
            redis_cli(deployed, port, "SET", "canary:alert", "off")
    wait_until(lambda: share(count_requests(proxy, 60), "canary") > 0, 30,
               "the canary back in rotation")


def test_canary_deploy_and_promote_under_steady_load(deployed: MachinesEnv) -> None:
    proxy = f"http://{deployed.address('proxy')}/"
    with Load(proxy, threads=2, max_seconds=600, pause=0.05) as load:
        deployed.cdpipe("deploy", "--ref", deployed.old, "--target", "canary")
        versions = {i["role"]: i["version"] for i in deployed.status()["instances"]}
        assert (versions["prod"], versions["canary"]) == (deployed.new, deployed.old)
        deployed.cdpipe("canary", "promote", "--now")  # the monitor polls every 90 s
        versions = {i["role"]: i["version"] for i in deployed.status()["instances"]}
        assert (versions["prod"], versions["canary"]) == (deployed.old, deployed.old)
    assert len(load.samples) > 100
    assert load.failures() == []


def test_scale_out_brings_a_new_machine_and_scale_in_removes_it(
        deployed: MachinesEnv) -> None:
    """The rig makes a machine for an instance launched later too, and removes it when
    the instance is terminated; the new machine serves prod's commit in rotation."""
    before = {i["id"] for i in deployed.status()["instances"]}
    proxy = f"http://{deployed.address('proxy')}/"
    with Load(proxy, threads=2, max_seconds=900, pause=0.05) as load:
        deployed.cdpipe("scale", "out")
        report = deployed.status()
        new = [i for i in report["instances"] if i["id"] not in before]
        assert len(new) == 1 and new[0]["role"] == "prod" and new[0]["healthy"]
        assert new[0]["version"] == report["deployed"]["prod"]
        machine = deployed.machine(new[0]["id"])
        assert podman("inspect", "--format", "{{.State.Running}}", machine).strip() == "true"
        wait_until(lambda: new[0]["id"] in {s.instance for s in count_requests(proxy, 60)},
                   30, "the new machine answering through the proxy")
        deployed.cdpipe("scale", "in")
    assert load.failures() == []
    assert {i["id"] for i in deployed.status()["instances"]} == before
    wait_until(lambda: podman("ps", "--all", "--quiet", "--filter",
                              f"name=^{machine}$").strip() == "", 30,
               "the terminated instance's machine removed")


def test_a_private_repository_through_a_deploy_key(deployed: MachinesEnv,
                                                  tmp_path: Path) -> None:
    with private_git_server(tmp_path / "git", PROJECT_ROOT) as (url, key):
        env = deployed.env | {"CDPIPE_APP_REPO": url}
        # Without the key the machine cannot clone: one line naming the step, and the
        # canary keeps serving what it served.
        before = {i["role"]: i["version"] for i in deployed.status()["instances"]}
        out = deployed.cdpipe("deploy", "--ref", deployed.new, "--target", "canary",
                              check=False, env=env)
        assert out.returncode == 1
        assert "Check out the exact commit" in out.stderr, out.stderr
        assert {i["role"]: i["version"] for i in deployed.status()["instances"]} == before
        deployed.cdpipe("deploy", "--ref", deployed.new, "--target", "canary",
                        env=env | {"CDPIPE_APP_DEPLOY_KEY_FILE": str(key)})
    versions = {i["role"]: i["version"] for i in deployed.status()["instances"]}
    assert versions["canary"] == deployed.new
    canary = deployed.address("canary")
    assert deployed.ssh(canary, "sudo stat -c '%U %a' /opt/cdpipe/app/shared/deploy_key"
                        ).strip() == "root 600"
    secret = key.read_text().splitlines()[1]  # a line of the private key's body
    logs = "".join(p.read_text(errors="replace") for p in (deployed.home / "logs").iterdir())
    assert secret not in logs
