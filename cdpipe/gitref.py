"""Resolving what the user names (a branch, a tag, a short SHA) to one exact commit."""

from __future__ import annotations

import re
import subprocess

from cdpipe.errors import CdpipeError
from cdpipe_host.names import shown

# What a SHA, a branch, a tag or a revision such as HEAD~1 is made of; no blank, no
# control character, never an option of git.
REF = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_./~^@{}+-]{0,199}")


def check(ref: str) -> str:
    """``ref`` when it can name a commit at all, else a one-line error (before any
    other work: nothing is half-applied)."""
    if not REF.fullmatch(ref):
        raise CdpipeError(f"invalid ref {shown(ref)}: give a commit SHA, branch or tag "
                          "(at most 200 of A-Z a-z 0-9 _ . / ~ ^ @ { } + -)")
    return ref


def resolve(repo: str, ref: str) -> str:
    """The full SHA of ``ref`` in ``repo``, or a one-line error naming the problem."""
    check(ref)
    try:
        out = subprocess.run(
            ["git", "-C", repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
            capture_output=True, text=True, check=False, timeout=30,
        )
    except FileNotFoundError:
        raise CdpipeError("git not found on PATH; run scripts/bootstrap") from None
    if out.returncode != 0 or not out.stdout.strip():
        raise CdpipeError(
            f"ref {shown(ref)} does not resolve to a commit in {repo}; "
            "push it there or pick one from `git log`"
        )
    return out.stdout.strip()
