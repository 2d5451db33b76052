"""The AWS path end to end over SSH: `cdpipe up --provider aws` on the rig's Debian
machines, traffic through the proxy machine, the operator's redis-cli through an SSH
tunnel, services as their own users, a canary deploy and promote under load, and a
machine that dies. Tests run in file order on one environment; the dead machine last."""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import time
from collections.abc import Iterator

import requests

from devkit.ports import free_port
from rig.podman import podman
from tests.e2e.load import Load, count_requests, share
from tests.machines.conftest import SSH_OPTIONS, MachinesEnv
from tests.support import wait_until


@contextlib.contextmanager
def redis_tunnel(env: MachinesEnv) -> Iterator[int]:
    """The README's way for an operator: an SSH tunnel through the proxy machine to
    Redis' private address; yields the local port."""
    port = free_port()
    proxy, redis_host = env.address("proxy"), env.address("redis")
    proc = subprocess.Popen(["ssh", *SSH_OPTIONS, "-i", str(env.key), "-N",
                             "-L", f"127.0.0.1:{port}:{redis_host}:6379", f"admin@{proxy}"])

    def listening() -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0
    try:
        wait_until(listening, 30, "the SSH tunnel to Redis")
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def redis_cli(env: MachinesEnv, port: int, *args: str) -> str:
    password = (env.home / "secrets" / "redis_password").read_text().strip()
    out = subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True,
                         text=True, timeout=30, check=True,
                         env={"REDISCLI_AUTH": password, "PATH": "/usr/bin:/bin"})
    return out.stdout.strip()


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
    assert "haproxy" in users("proxy", "haproxy -W")
    redis_host = deployed.address("redis")
    assert deployed.ssh(redis_host, "systemctl is-enabled redis-server",
                        check=False).strip() == "masked"
    assert deployed.ssh(deployed.address("proxy"), "systemctl is-enabled haproxy",
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
        deployed.cdpipe("canary", "promote")
        versions = {i["role"]: i["version"] for i in deployed.status()["instances"]}
        assert (versions["prod"], versions["canary"]) == (deployed.old, deployed.old)
    assert len(load.samples) > 100
    assert load.failures() == []


def test_a_dead_machine_is_unhealthy_and_the_proxy_routes_around_it(
        deployed: MachinesEnv) -> None:
    prod = deployed.instance_id("prod")
    podman("stop", "--time", "5", deployed.machine(prod))
    healthy = {i["id"]: i["healthy"] for i in deployed.status()["instances"]}
    assert healthy[prod] is False
    assert all(ok for iid, ok in healthy.items() if iid != prod)
    proxy = f"http://{deployed.address('proxy')}/"
    # HAProxy's health checks take the dead server out within a few seconds.
    wait_until(lambda: all(s.status == 200 for s in count_requests(proxy, 20)), 30,
               "every request answered while prod's machine is dead")
    samples = count_requests(proxy, 100)
    assert [s for s in samples if s.status != 200] == []
    assert {s.role for s in samples} == {"canary"}
