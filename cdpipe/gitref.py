"""Resolving what the user names (a branch, a tag, a short SHA) to one exact commit."""

from __future__ import annotations

import subprocess

from cdpipe.errors import CdpipeError


def resolve(repo: str, ref: str) -> str:
    """The full SHA of ``ref`` in ``repo``, or a one-line error naming the problem."""
    if not ref or ref.startswith("-"):
        raise CdpipeError(f"invalid ref {ref!r}: give a commit SHA, branch or tag")
    try:
        out = subprocess.run(
            ["git", "-C", repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
            capture_output=True, text=True, check=False, timeout=30,
        )
    except FileNotFoundError:
        raise CdpipeError("git not found on PATH; run scripts/bootstrap") from None
    if out.returncode != 0 or not out.stdout.strip():
        raise CdpipeError(
            f"ref {ref!r} does not resolve to a commit in {repo}; "
            "push it there or pick one from `git log`"
        )
    return out.stdout.strip()
