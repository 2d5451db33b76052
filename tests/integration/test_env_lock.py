"""The environment lock (cdpipe.env_lock) on a real redis-server that runs the redis
role's ACL rules, taken as the deployer user as cdpipe takes it: two holders never
overlap, a dead holder's lock frees itself at its expiry, only its owner releases it,
a waiting actor says who it waits for and gives up at its deadline in one line, the
extension keeps a long holder's lock, and a lost lock is reported. Then as cdpipe
takes it (Environment.locked, from two CDPIPE_HOMEs of one environment), what it does
when Redis does not answer, and `cdpipe status` showing the holder. Two real `cdpipe`
processes on a real environment: tests/e2e/test_f_environment_lock.py."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis
from redis.exceptions import LockNotOwnedError

from cdpipe.config import Settings
from cdpipe.env_lock import EnvironmentLock, held, holder, owner_of
from cdpipe.environment import Environment
from cdpipe.errors import CdpipeError
from cdpipe.model import Instance
from cdpipe.redis_users import password_name
from cdpipe.state import State, save
from cdpipe_host.keys import ENV_LOCK
from devkit import cdpipe_env, free_port
from devkit.acl_redis import AclRedis
from tests.support import clean, server  # noqa: F401 (fixtures)

CDPIPE = str(Path(sys.executable).parent / "cdpipe")

OWNER = re.compile(r"^(deploy|scale out) on \S+ pid \d+ since "
                   r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \[[0-9a-f]{8}\]$")


def deployer(server: AclRedis, timeout: float = 5) -> redis.Redis:
    return redis.Redis(port=server.port, username="deployer",
                       password=server.passwords["deployer"], decode_responses=True,
                       socket_timeout=timeout, socket_connect_timeout=timeout)


def test_two_holders_never_overlap(server: AclRedis) -> None:
    intervals: list[tuple[str, float, float]] = []
    lines: list[str] = []

    def actor(command: str) -> None:
        for _ in range(3):
            with held(deployer(server), command, lines.append, wait_seconds=30):
                start = time.monotonic()
                time.sleep(0.15)
                intervals.append((command, start, time.monotonic()))

    threads = [threading.Thread(target=actor, args=(c,)) for c in ("deploy", "scale out")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(intervals) == 6
    ordered = sorted(intervals, key=lambda i: i[1])
    for (_, _, end), (_, start, _) in itertools.pairwise(ordered):
        assert start >= end, ordered
    assert any(line.startswith("waiting for the environment lock: held by ")
               for line in lines), lines
    assert holder(server.client("operator")) is None  # both released it
    took = [line for line in lines if line.startswith("took the environment lock at ")]
    releasing = [line for line in lines
                 if re.fullmatch(r"releasing the environment lock at \S+Z", line)]
    assert len(took) == len(releasing) == 6


def test_the_owner_is_command_host_pid_and_time(server: AclRedis) -> None:
    with held(deployer(server), "deploy", print) as lock:
        assert OWNER.match(lock.owner), lock.owner
        seen = holder(server.client("operator"))  # the operator reads it (status)
        assert seen is not None and seen.owner == lock.owner
        assert seen.seconds_left is not None and 115 < seen.seconds_left <= 120
    assert OWNER.match(owner_of("scale out"))
    assert owner_of("deploy") != owner_of("deploy")


def test_a_dead_holders_lock_frees_itself_at_its_expiry(server: AclRedis) -> None:
    script = ("import sys, time, redis\n"
              "from cdpipe.env_lock import held\n"
              f"r = redis.Redis(port={server.port}, username='deployer', "
              f"password={server.passwords['deployer']!r})\n"
              "with held(r, 'deploy', print, expiry=2):\n"
              "    print('HOLDING', flush=True)\n"
              "    time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("HOLDING"):
                break
        proc.kill()  # a crash: nothing releases the lock
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    died = time.monotonic()
    assert holder(server.client("operator")) is not None
    lines: list[str] = []
    with held(deployer(server), "scale out", lines.append, wait_seconds=10):
        waited = time.monotonic() - died
    assert 0.5 < waited < 3.5, waited  # the rest of its 2 s expiry, not more
    assert "held by deploy on" in lines[0], lines


def test_only_the_owner_releases_or_extends(server: AclRedis) -> None:
    with held(deployer(server), "deploy", print) as lock:
        other = EnvironmentLock(deployer(server), owner_of("scale out"), print)
        assert not other.lock.acquire(blocking=False, token=other.owner)
        other.lock.local.token = other.owner.encode()  # as if it believed it held it
        with pytest.raises(LockNotOwnedError):
            other.lock.reacquire()
        with pytest.raises(LockNotOwnedError):
            other.lock.release()
        with pytest.raises(redis.exceptions.NoPermissionError):  # the operator reads only
            server.client("operator").delete(ENV_LOCK)
        seen = holder(server.client("operator"))
        assert seen is not None and seen.owner == lock.owner
    assert holder(server.client("operator")) is None


def test_a_waiting_actor_names_the_holder_and_gives_up_at_its_deadline(
        server: AclRedis) -> None:
    with held(deployer(server), "deploy", print) as first:
        lines: list[str] = []
        second = EnvironmentLock(deployer(server), owner_of("scale out"), lines.append)
        started = time.monotonic()
        with pytest.raises(CdpipeError) as caught:
            second.acquire(wait_seconds=1.2, progress_every=0.5)
        assert 1.2 <= time.monotonic() - started < 2.5
        assert re.fullmatch(rf"the environment is locked by {re.escape(first.owner)} "
                            r"\(expires in 1[01]\d s\); try again later", str(caught.value))
        assert lines[0].startswith(f"waiting for the environment lock: held by "
                                   f"{first.owner} (expires in ")
        assert lines[0].endswith("giving up after 1 s")
        assert len(lines) >= 2 and lines[1].startswith("still waiting after ")
    assert holder(server.client("operator")) is None


def test_the_extension_keeps_a_long_holders_lock(server: AclRedis) -> None:
    lines: list[str] = []
    with held(deployer(server), "deploy", lines.append, expiry=1) as lock:
        for _ in range(12):  # 3 s: three times its expiry
            seen = holder(server.client("operator"))
            assert seen is not None and seen.owner == lock.owner
            other = EnvironmentLock(deployer(server), owner_of("scale out"), print)
            assert not other.lock.acquire(blocking=False, token=other.owner)
            time.sleep(0.25)
    assert lock.lost is None and not any("LOST" in line for line in lines)
    assert holder(server.client("operator")) is None


def test_a_lock_whose_key_vanished_is_reported_lost(server: AclRedis) -> None:
    lines: list[str] = []
    lost = r"^the environment lock was lost while the command ran \(its key is gone"
    with (pytest.raises(CdpipeError, match=lost),
          held(deployer(server), "deploy", lines.append, expiry=1)):
        server.client("admin").delete(ENV_LOCK)  # an operator broke it
        time.sleep(0.6)
        assert any(line.startswith("LOST the environment lock") for line in lines)


def test_a_lock_redis_stopped_answering_for_its_expiry_is_reported_lost(
        server: AclRedis) -> None:
    lines: list[str] = []
    admin = server.client("admin")
    with (pytest.raises(CdpipeError, match=r"Redis did not answer for \d+ s"),
          held(deployer(server, timeout=0.2), "deploy", lines.append, expiry=1)):
        admin.execute_command("CLIENT", "PAUSE", "2500", "ALL")
        time.sleep(2.8)
    assert any("LOST the environment lock (Redis did not answer" in line for line in lines)
    assert holder(server.client("operator")) is None  # it expired meanwhile


def test_a_failed_command_keeps_its_own_error(server: AclRedis) -> None:
    with (pytest.raises(ValueError, match="the deploy broke"),
          held(deployer(server), "deploy", print)):
        raise ValueError("the deploy broke")
    assert holder(server.client("operator")) is None  # released all the same


# -- as cdpipe takes it: Environment.locked, `cdpipe status` ----------------------------
def environment(server: AclRedis | None, home: Path, lines: list[str]) -> Environment:
    """An Environment of the local provider whose state knows one Redis instance: the
    server (its passwords in the secrets directory), or a port where nothing listens."""
    secrets_dir = home / "secrets"
    secrets_dir.mkdir(parents=True)
    port = free_port()
    if server is not None:
        port = server.port
        for user, password in server.passwords.items():
            (secrets_dir / password_name(user)).write_text(password + "\n")
    save(home / "state.json", State(provider="local", instances=[Instance(
        id="redis-1", role="redis", host="127.0.0.1", ports={"redis": port},
        provider="local")]))
    return Environment(Settings(home=home, port_base=31500), show=lines.append)


def test_two_checkouts_of_one_environment_share_its_lock(
        server: AclRedis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Jenkins' checkout deploys; the monitor's (another CDPIPE_HOME) scales out: it
    waits, and gives up at CDPIPE_LOCK_WAIT_SECONDS in one line naming the deploy."""
    jenkins, monitor = [], []
    deploying = environment(server, tmp_path / "jenkins", jenkins)
    scaling = environment(server, tmp_path / "monitor", monitor)
    monkeypatch.setenv("CDPIPE_LOCK_WAIT_SECONDS", "1")
    with deploying.locked("deploy"):
        seen = holder(server.client("operator"))
        assert seen is not None and seen.owner.startswith("deploy on ")
        refused = r"^the environment is locked by deploy on .* \(expires in \d+ s\); try"
        with pytest.raises(CdpipeError, match=refused), scaling.locked("scale out"):
            pytest.fail("the scale-out ran while the deploy held the lock")
        assert monitor[0].startswith("waiting for the environment lock: held by deploy on")
    assert holder(server.client("operator")) is None
    with scaling.locked("scale out"):
        seen = holder(server.client("operator"))
        assert seen is not None and seen.owner.startswith("scale out on ")


def test_without_an_answering_redis_scaling_refuses_and_the_rest_goes_on(
        tmp_path: Path) -> None:
    lines: list[str] = []
    env = environment(None, tmp_path / "home", lines)
    for command in ("scale out", "scale in"):
        refused = (r"^cannot take the environment lock: Redis at 127\.0\.0\.1:\d+ does not "
                   r"answer \(.*\); nothing was changed")
        with pytest.raises(CdpipeError, match=refused), env.locked(command):
            pytest.fail(f"{command} acted without the lock")
    for command in ("up", "deploy", "down"):
        ran = False
        with env.locked(command):
            ran = True
        assert ran
        assert lines[-1].startswith("environment lock not taken: Redis at 127.0.0.1:")
        assert lines[-1].endswith(f"; {command} goes on")


def test_status_shows_the_holder(server: AclRedis, tmp_path: Path) -> None:
    lines: list[str] = []
    env = environment(server, tmp_path / "home", lines)
    status_env = cdpipe_env(tmp_path / "home", 31500)

    def status(*args: str) -> str:
        out = subprocess.run([CDPIPE, "status", *args], env=status_env, text=True,
                             capture_output=True, timeout=60, check=False)
        assert out.returncode == 0, out.stderr
        return out.stdout

    assert json.loads(status("--json"))["lock"] is None
    assert "environment lock: free" in status()
    with env.locked("deploy"):
        report = json.loads(status("--json"))["lock"]
        assert env.env_lock is not None and report["owner"] == env.env_lock.owner
        assert 100 < report["seconds_left"] <= 120
        assert f"environment lock: held by {report['owner']} (expires in " in status()


def test_a_redis_that_refuses_the_deployer_is_named_as_such(server: AclRedis,
                                                           tmp_path: Path) -> None:
    """An environment whose Redis predates the deployer's rules or password."""
    lines: list[str] = []
    env = environment(server, tmp_path / "home", lines)
    (tmp_path / "home" / "secrets" / password_name("deployer")).write_text("stale\n")
    refused = (r"^cannot take the environment lock: Redis at 127\.0\.0\.1:\d+ refused the "
               r"deployer user \(.*\); `cdpipe up` installs its password and rules; nothing")
    with pytest.raises(CdpipeError, match=refused), env.locked("scale out"):
        pytest.fail("scale out acted without the lock")
    with env.locked("up"):
        assert lines[-1].startswith("environment lock not taken: Redis at 127.0.0.1:")
