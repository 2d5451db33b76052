"""What tests and benchmarks share: free loopback ports, scratch git repositories, the
environment of a scratch cdpipe home, a throw-away redis-server (``devkit.redis_server``).
Neither ``tests`` nor ``bench`` is imported here, so both can use it (``bench`` must not
import ``tests``)."""

from __future__ import annotations

from devkit.ports import free_port, free_port_block
from devkit.scratch import cdpipe_env, commit_change, git, git_init, make_scratch_repo

__all__ = ["cdpipe_env", "commit_change", "free_port", "free_port_block", "git", "git_init",
           "make_scratch_repo"]
