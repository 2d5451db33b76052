"""Control-plane pieces without servers: refs, ports, inventory, settings, CLI errors."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cdpipe import gitref, secret_files
from cdpipe.config import Settings
from cdpipe.errors import CdpipeError
from cdpipe.inventory import build
from cdpipe.providers.local import LocalProvider
from cdpipe.redis_users import USERS
from cdpipe.state import State
from devkit import cdpipe_env, commit_change, free_port_block, git, git_init

CDPIPE = str(Path(sys.executable).parent / "cdpipe")


def test_resolve_gives_full_sha_and_refuses_unknown(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("1")
    git_init(tmp_path)
    first = git(tmp_path, "rev-parse", "HEAD")
    second = commit_change(tmp_path, "f", "2", "two")
    assert gitref.resolve(str(tmp_path), "HEAD") == second
    assert gitref.resolve(str(tmp_path), "HEAD~1") == first
    assert gitref.resolve(str(tmp_path), first[:8]) == first
    with pytest.raises(CdpipeError, match="does not resolve to a commit"):
        gitref.resolve(str(tmp_path), "0" * 40)
    with pytest.raises(CdpipeError, match="invalid ref"):
        gitref.resolve(str(tmp_path), "--all")


def test_port_taken_refuses_before_creating_anything(tmp_path: Path) -> None:
    # Below the ephemeral range (32768+), where a client connection of another test
    # cannot land on proxy-1's port (CI run 10), and clear of the e2e homes' blocks.
    base = free_port_block(40, 22000)
    settings = Settings(home=tmp_path / "home", port_base=base)
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            holder.bind(("127.0.0.1", base + 20))  # prod-1's http port
        except OSError:
            pytest.skip("port range busy")
        holder.listen()
        state = State()
        with pytest.raises(CdpipeError, match=rf"port {base + 20} \(prod-1 http\)"):
            LocalProvider(settings).ensure(state, {"proxy": 1, "redis": 1, "prod": 1})
    assert state.instances == []
    assert not (tmp_path / "home" / "instances").exists()


def test_inventory_groups_roles_and_carries_deployed_refs(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, port_base=30000)
    provider = LocalProvider(settings)
    state = State()
    scratch = state.model_copy(deep=True)
    for slot, role in enumerate(("proxy", "redis", "prod", "canary")):
        inst = provider._plan(scratch, role, slot)  # type: ignore[arg-type]
        scratch.instances.append(inst)
    scratch.deployed = {"prod": "a" * 40, "canary": "b" * 40}
    inv = build(settings, scratch, provider)["all"]
    children = inv["children"]
    assert list(children["prod"]["hosts"]) == ["prod-1"]
    assert children["prod"]["hosts"]["prod-1"]["app_port"] == 30020
    assert children["proxy"]["hosts"]["proxy-1"]["proxy_frontend_port"] == 30000
    assert children["redis"]["hosts"]["redis-1"]["redis_port"] == 30010
    assert children["canary"]["vars"]["app_ref"] == "b" * 40
    assert inv["vars"]["ansible_connection"] == "local"
    # The cross-host facts: where Redis is, for every role's one URL.
    assert (inv["vars"]["cdpipe_redis_host"], inv["vars"]["cdpipe_redis_port"]) == (
        "127.0.0.1", 30010)
    assert set(inv["vars"]["cdpipe_redis_urls"]) == set(USERS)
    # No secret is written into the inventory itself: lookups of the secret files only.
    dumped = yaml.safe_dump(inv)
    for user in USERS:
        assert inv["vars"]["cdpipe_redis_passwords"][user].startswith("{{ lookup(")
        assert inv["vars"]["cdpipe_redis_urls"][user].startswith(f"redis://{user}:{{{{ ")
    written = secret_files.ensure(settings.secrets_dir)
    assert not any(value in dumped for value in written.values())


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CDPIPE, *args], env=env, capture_output=True, text=True,
                          timeout=120, check=False)


def test_deploy_before_up_is_one_clear_line(tmp_path: Path) -> None:
    out = run_cli(cdpipe_env(tmp_path, 31000), "deploy", "--ref", "HEAD")
    assert out.returncode == 1
    assert out.stderr.strip() == "error: no environment is up here; run `cdpipe up` first"


def test_bad_setting_is_one_clear_line(tmp_path: Path) -> None:
    env = cdpipe_env(tmp_path, 31000)
    env["CDPIPE_PORT_BASE"] = "80"
    out = run_cli(env, "status")
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1 and "CDPIPE_PORT_BASE" in out.stderr


def test_missing_haproxy_is_one_clear_line(tmp_path: Path) -> None:
    env = cdpipe_env(tmp_path, 31000)
    # A PATH with git and redis-server but without the directory haproxy lives in.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("git", "redis-server"):
        found = subprocess.run(["which", tool], capture_output=True, text=True).stdout.strip()
        (bindir / tool).symlink_to(found)
    env["PATH"] = f"{Path(sys.executable).parent}:{bindir}"
    out = run_cli(env, "up")
    assert out.returncode == 1
    assert "haproxy not found on PATH" in out.stderr and out.stderr.count("\n") == 1
    assert not (tmp_path / "instances").exists()


def test_unknown_target_is_refused(tmp_path: Path) -> None:
    out = run_cli(cdpipe_env(tmp_path, 31000), "deploy", "--ref", "HEAD", "--target", "qa")
    assert out.returncode == 1
    assert out.stderr.strip() == (
        "error: unknown target 'qa'; use --target prod or --target canary")
