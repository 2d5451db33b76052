"""End to end on the real local stack: up, route, converge, deploy, heal, down."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import requests

from tests.e2e.conftest import LocalEnv
from tests.e2e.observe import health, wait_answers
from tests.support import wait_until

# Each test starts from the environment as `up --ref new` left it (clean_env), whatever
# ran before it, and leaves it so.
pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("clean_env")]


def status(env: LocalEnv) -> dict:  # type: ignore[type-arg]
    return json.loads(env.cdpipe("status", "--json").stdout)


def versions(env: LocalEnv) -> dict[str, str]:
    return {i["id"]: i["version"] for i in status(env)["instances"] if i["version"]}


def test_status_reports_the_contract_keys(local_env: LocalEnv) -> None:
    report = status(local_env)
    assert report["provider"] == "local"
    assert report["proxy"]["url"] == local_env.proxy_url
    # The operator's URL, its password redacted (--show-secrets prints it; a named user:
    # redis-cli 7 refuses an empty one).
    port = local_env.port_base + 10
    assert report["redis"]["url"] == f"redis://operator:REDACTED@127.0.0.1:{port}/0"
    shown = json.loads(local_env.cdpipe("status", "--json", "--show-secrets").stdout)
    assert shown["redis"]["url"] == local_env.redis_url("operator")
    roles = sorted(i["role"] for i in report["instances"])
    assert roles == ["canary", "prod", "proxy", "redis"]
    assert all(i["healthy"] for i in report["instances"])
    assert report["canary"] == {"weight": 33, "alert": False}
    assert report["flags"] == {}
    assert "maildir" in report["mail"]


def test_proxy_splits_two_thirds_prod_one_third_canary(local_env: LocalEnv) -> None:
    seen: Counter[str] = Counter()
    with requests.Session() as session:
        for _ in range(300):
            session.cookies.clear()  # each request is a new user
            resp = session.get(local_env.proxy_url + "/", timeout=5)
            assert resp.status_code == 200
            body = resp.json()
            assert body["version"] == local_env.new
            seen[body["role"]] += 1
    assert abs(seen["prod"] / 300 - 2 / 3) <= 0.05, seen
    assert abs(seen["canary"] / 300 - 1 / 3) <= 0.05, seen


def test_hiddenfeature_follows_redis_flag(local_env: LocalEnv) -> None:
    import redis

    assert requests.get(local_env.proxy_url + "/hiddenfeature", timeout=5).status_code == 404
    # As the README shows it: redis-cli as the operator, the password from its file.
    password_file = local_env.home / "secrets" / "redis_operator_password"
    out = subprocess.run(
        ["sh", "-c", f"REDISCLI_AUTH=$(cat {password_file}) redis-cli --user operator "
                     f"-p {local_env.port_base + 10} SET flag:hiddenfeature on"],
        capture_output=True, text=True, timeout=10, check=False)
    assert out.stdout.strip() == "OK", out  # clean_env removes the flag after the test
    # Served by every instance (their caches hear of the SET), then through the proxy.
    wait_answers([local_env.url(2), local_env.url(3)], "/hiddenfeature", 200)
    codes = {requests.get(local_env.proxy_url + "/hiddenfeature", timeout=5).status_code
             for _ in range(6)}
    assert codes == {200}
    # Redis refuses clients without the password.
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=local_env.port_base + 10).get("flag:hiddenfeature")


@pytest.mark.parametrize(("instance", "users"), [
    ("canary-1", {"app"}), ("prod-1", {"app"}), ("redis-1", set()),
    ("proxy-1", {"controller", "deployer", "monitor"})])
def test_each_instance_holds_only_its_redis_credentials(local_env: LocalEnv, instance: str,
                                                        users: set[str]) -> None:
    """No file of an instance's sandbox (supervisor programs, configuration, the
    releases' settings) holds the password of a Redis user it does not run as: the
    canary has the app user's only (it cannot write servers:*), Redis only hashes."""
    secrets_dir = local_env.home / "secrets"
    passwords = {p.name: p.read_text().strip() for p in secrets_dir.glob("redis_*_password")}
    found: set[str] = set()
    for path in (local_env.home / "instances" / instance).rglob("*"):
        if (not path.is_file() or path.is_symlink() or path.stat().st_size > 1_000_000
                or {".venv", "venvs", ".git", "__pycache__"} & set(path.parts)):
            continue
        data = path.read_bytes()
        found |= {name for name, value in passwords.items() if value.encode() in data}
    assert found == {f"redis_{user}_password" for user in users}


def test_second_site_run_changes_nothing(local_env: LocalEnv) -> None:
    env = dict(local_env.env, ANSIBLE_CONFIG=str(Path.cwd() / "ansible.cfg"))
    out = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i",
         str(local_env.home / "inventory.yml"), "playbooks/site.yml"],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert out.returncode == 0, out.stdout[-3000:]
    recap = [line for line in out.stdout.splitlines() if " : ok=" in line]
    assert len(recap) == 4, out.stdout[-2000:]
    assert all("changed=0 " in line and "failed=0 " in line for line in recap), recap


def test_deploy_older_commit_to_canary_only(local_env: LocalEnv) -> None:
    local_env.cdpipe("deploy", "--ref", local_env.old, "--target", "canary")
    got = versions(local_env)
    assert got == {"prod-1": local_env.new, "canary-1": local_env.old}


def test_deploy_of_missing_commit_fails_and_old_release_serves(local_env: LocalEnv) -> None:
    before = versions(local_env)
    out = local_env.cdpipe("deploy", "--ref", "f" * 40, "--target", "canary", check=False)
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1 and "does not resolve to a commit" in out.stderr
    assert versions(local_env) == before


def test_broken_release_is_rolled_back(local_env: LocalEnv) -> None:
    before = versions(local_env)
    out = local_env.cdpipe("deploy", "--ref", local_env.broken, "--target", "canary",
                           check=False)
    assert out.returncode == 1
    assert "failed at 'Wait for the new release to answer /healthz.'" in out.stderr
    assert "the previous release keeps serving" in out.stderr
    assert versions(local_env) == before
    releases = local_env.home / "instances" / "canary-1" / "app" / "releases"
    assert not (releases / local_env.broken).exists()
    assert json.loads(
        (local_env.home / "state.json").read_text())["deployed"]["canary"] == before["canary-1"]


def test_killed_gunicorn_comes_back(local_env: LocalEnv) -> None:
    sock = local_env.home / "instances" / "prod-1" / "supervisord.conf"
    ctl = [str(Path(sys.executable).parent / "supervisorctl"), "-c", str(sock)]
    pid = int(subprocess.run([*ctl, "pid", "app"], capture_output=True, text=True,
                             check=True).stdout.strip())
    os.kill(pid, signal.SIGKILL)

    def back() -> bool:
        new_pid = subprocess.run([*ctl, "pid", "app"], capture_output=True, text=True,
                                 check=False).stdout.strip()
        return (new_pid.isdigit() and int(new_pid) not in (0, pid)
                and health(local_env.url(2)).get("status") == "ok")
    wait_until(back, 30, "prod's gunicorn restarted by supervisor (a new pid) and answering "
               "/healthz", interval=0.2)


def test_up_again_converges_without_changes(canary_on_old: LocalEnv) -> None:
    local_env = canary_on_old
    # The canary runs `old` (the fixture deployed it): put both on `new`, then once more.
    local_env.cdpipe("up", "--ref", local_env.new)
    out = local_env.cdpipe("up", "--ref", local_env.new)
    assert "site.yml: 0 changed" in out.stdout
    assert "nothing created" in out.stdout
