"""A throw-away local environment for benchmarks, deployed from a scratch repository."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cdpipe.controls import format_redis_url
from cdpipe.redis_users import password_name
from devkit import cdpipe_env, commit_change, free_port_block, git, make_scratch_repo

CDPIPE = str(Path(sys.executable).parent / "cdpipe")


@dataclass
class BenchEnv:
    root: Path
    repo: Path
    port_base: int
    env: dict[str, str]

    @property
    def home(self) -> Path:
        return self.root / "home"

    def redis_url(self, user: str) -> str:
        """The URL of one of the environment's Redis users, from its password file."""
        password = (self.home / "secrets" / password_name(user)).read_text().strip()
        return format_redis_url("127.0.0.1", self.port_base + 10, user, password)

    def cdpipe(self, *args: str) -> float:
        """Runs cdpipe; returns its wall time in seconds."""
        started = time.perf_counter()
        out = subprocess.run([CDPIPE, *args], env=self.env, capture_output=True, text=True,
                             check=False)
        took = time.perf_counter() - started
        if out.returncode != 0:
            raise SystemExit(f"bench: cdpipe {' '.join(args)} failed: {out.stderr.strip()}")
        return took

    def new_commit(self, note: str) -> str:
        return commit_change(self.repo, "NOTES.txt", note + "\n", note)

    def head(self) -> str:
        return git(self.repo, "rev-parse", "HEAD")


@contextmanager
def bench_env() -> Iterator[BenchEnv]:
    with tempfile.TemporaryDirectory(prefix="cdpipe-bench-") as tmp:
        root = Path(tmp)
        repo = make_scratch_repo(root / "repo")
        base = free_port_block(start=40000)
        env = BenchEnv(root, repo, base, cdpipe_env(root / "home", base, repo))
        try:
            yield env
        finally:
            subprocess.run([CDPIPE, "down"], env=env.env, capture_output=True, check=False)
