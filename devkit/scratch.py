"""Scratch git repositories made from this project, and the environment of a cdpipe
command that works in a scratch home (``CDPIPE_HOME``, ``CDPIPE_PORT_BASE``)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from cdpipe import PROJECT_ROOT


def git(repo: Path, *args: str) -> str:
    out = subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                         text=True)
    return out.stdout.strip()


def make_scratch_repo(dest: Path) -> Path:
    """A copy of the project's committed tree as a new repository with one commit."""
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(PROJECT_ROOT), "archive", "HEAD"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    # Tests run on the working tree: deploy the code as it is now, not as last committed.
    for package in ("app", "cdpipe", "cdpipe_host", "monitoring"):
        shutil.rmtree(dest / package)
        shutil.copytree(PROJECT_ROOT / package, dest / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    git_init(dest)
    return dest


def git_init(repo: Path) -> None:
    env_args = ["-c", "user.name=cdpipe tests", "-c", "user.email=tests@cdpipe.invalid"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(repo), *env_args, "commit", "-qm", "scratch"],
                   check=True)


def commit_change(repo: Path, path: str, text: str, message: str) -> str:
    (repo / path).write_text(text, encoding="utf-8")
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=cdpipe tests", "-c", "user.email=tests@cdpipe.invalid",
        "commit", "-qm", message)
    return git(repo, "rev-parse", "HEAD")


def commit_flaky_release(repo: Path, branch: str, start: str = "HEAD") -> str:
    """A commit on a new branch from ``start`` whose app answers ``/`` with a 500 for about
    40% of requests (a canary release that must fail judgement); the checkout returns
    to the branch it was on. Returns the commit's SHA."""
    back_to = git(repo, "rev-parse", "--abbrev-ref", "HEAD")
    git(repo, "checkout", "-q", "-b", branch, start)
    views = (repo / "app" / "views.py").read_text(encoding="utf-8")
    flaky = commit_change(repo, "app/views.py", views.replace(
        "    cfg = current_app.config\n    return jsonify(",
        "    cfg = current_app.config\n    if time.perf_counter_ns() % 10 < 4:\n"
        "        return jsonify(error='flaky'), 500\n    return jsonify(", 1),
        "a canary release that fails 40% of requests")
    git(repo, "checkout", "-q", back_to)
    return flaky


def cdpipe_env(home: Path, port_base: int, repo: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(CDPIPE_HOME=str(home), CDPIPE_PORT_BASE=str(port_base))
    if repo is not None:
        env["CDPIPE_APP_REPO"] = str(repo)
    return env
