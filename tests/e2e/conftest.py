"""One local environment shared by the end-to-end tests of a session.

It deploys from a scratch repository (a copy of this project's app) with commits the
tests make: ``old`` and ``new`` (serving after `up`), and ``broken`` (its app fails to
start). The environment is torn down with `cdpipe down` at the end, whatever happens.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from cdpipe.controls import format_redis_url
from cdpipe.redis_users import ADMIN, password_name
from devkit import cdpipe_env, commit_change, free_port_block, git, make_scratch_repo

CDPIPE = str(Path(sys.executable).parent / "cdpipe")


@dataclass
class LocalEnv:
    home: Path
    repo: Path
    port_base: int
    env: dict[str, str]
    old: str
    new: str
    broken: str

    def redis_url(self, user: str = ADMIN) -> str:
        """The URL of one of the environment's Redis users (admin: the tests reset and
        inspect everything), from its password file."""
        password = (self.home / "secrets" / password_name(user)).read_text().strip()
        return format_redis_url("127.0.0.1", self.port_base + 10, user, password)

    def redis(self, user: str = ADMIN) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url(user), decode_responses=True)

    def supervisorctl(self, instance: str, *args: str) -> str:
        conf = self.home / "instances" / instance / "supervisord.conf"
        out = subprocess.run(
            [str(Path(sys.executable).parent / "supervisorctl"), "-c", str(conf), *args],
            capture_output=True, text=True, check=False, timeout=60,
        )
        return out.stdout.strip()

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.port_base}"

    def url(self, slot: int) -> str:
        return f"http://127.0.0.1:{self.port_base + 10 * slot}"

    def cdpipe(self, *args: str, check: bool = True,
               timeout: float = 600) -> subprocess.CompletedProcess[str]:
        out = subprocess.run([CDPIPE, *args], env=self.env, capture_output=True, text=True,
                             timeout=timeout, check=False)
        if check and out.returncode != 0:
            raise AssertionError(f"cdpipe {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")
        return out


def make_env(root: Path) -> LocalEnv:
    """A scratch repository with commits `old`, `new` (main) and `broken`, and the
    settings of an environment on free ports; nothing is started."""
    repo = make_scratch_repo(root / "repo")
    old = git(repo, "rev-parse", "HEAD")
    new = commit_change(repo, "NOTES.txt", "a newer commit\n", "newer")
    git(repo, "checkout", "-q", "-b", "broken")
    broken = commit_change(repo, "app/views.py", "raise RuntimeError('broken release')\n",
                           "a release whose app cannot start")
    git(repo, "checkout", "-q", "main")
    port_base = free_port_block()
    env = cdpipe_env(root / "home", port_base, repo)
    return LocalEnv(root / "home", repo, port_base, env, old, new, broken)


@pytest.fixture(scope="session")
def local_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalEnv]:
    local = make_env(tmp_path_factory.mktemp("e2e"))
    try:
        local.cdpipe("up", "--ref", local.new)
        yield local
    finally:
        local.cdpipe("down", check=False)


# -- order made explicit --------------------------------------------------------------
# No test relies on what an earlier one left: those that need a state get it from a
# fixture below (which restores the clean state after them); the session's environment
# is reset between tests, not restarted. The one test that takes it down runs after
# every test that uses it, whatever the order of the files or of the command line.
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "takes_env_down: takes the session's environment down; runs after "
                   "every other test that uses local_env")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    last = [i for i in items if i.get_closest_marker("takes_env_down")]
    if not last:
        return
    rest = [i for i in items if i not in last]
    users = [n for n, i in enumerate(rest) if "local_env" in getattr(i, "fixturenames", ())]
    at = users[-1] + 1 if users else len(rest)
    items[:] = rest[:at] + last + rest[at:]


@pytest.fixture
def clean_env(local_env: LocalEnv) -> Iterator[LocalEnv]:
    """The environment as `cdpipe up --ref new` left it, whatever ran before: prod and
    canary on `new`, Redis running, no flag, no canary alert, the canary weight at its
    default, no server but the inventory's (seen in force in the apps and in HAProxy);
    and the same again after the test."""
    from tests.e2e.observe import reset_runtime, serve_commit, status

    def reset() -> None:
        report = status(local_env)  # read once: `cdpipe status` takes half a second
        reset_runtime(local_env, report)
        serve_commit(local_env, local_env.new, report)
    reset()
    yield local_env
    reset()


@pytest.fixture
def canary_on_old(clean_env: LocalEnv) -> LocalEnv:
    """A clean environment whose canary runs the older commit `old`."""
    clean_env.cdpipe("deploy", "--ref", clean_env.old, "--target", "canary")
    return clean_env
