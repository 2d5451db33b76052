"""Which tests run together in one pytest-xdist worker.

A whole local environment (`cdpipe up`, a minute or more) is a session fixture: every
test that uses one must run in the same worker, or each worker brings up its own. The
controller that hands out the work sees only node ids, so the modules of each shared
environment are named here; ``check_groups`` (run in every worker, on the collected
items) fails the run when a test uses a shared environment from a module not named
for it, so the list cannot fall behind the tests. Every other module is one unit of
work. (pytest-xdist's own ``--dist loadgroup`` marks do not reach the controller under
pytest 9.2, whose node ids are no longer the attribute xdist rewrites.)
"""

from __future__ import annotations

from typing import Any

import pytest
from xdist.scheduler import LoadScopeScheduling

# Fixture of a whole environment -> the modules whose tests use it.
SHARED_ENVIRONMENTS: dict[str, tuple[str, ...]] = {
    "local_env": ("tests/e2e/test_a_local_environment.py",
                  "tests/e2e/test_b_runtime_control.py",
                  "tests/e2e/test_c_down.py",
                  "tests/e2e/test_f_environment_lock.py",
                  "tests/e2e/test_g_dashboard.py"),
    "fault_env": ("tests/faults/test_process_kills.py",
                  "tests/faults/test_redis_faults.py",
                  "tests/faults/test_smtp_down.py"),
}
GROUP_OF_MODULE = {module: name for name, modules in SHARED_ENVIRONMENTS.items()
                   for module in modules}


def group_of(nodeid: str) -> str:
    module = nodeid.split("::", 1)[0]
    return GROUP_OF_MODULE.get(module, module)


class SharedEnvironmentScheduling(LoadScopeScheduling):
    """pytest-xdist's scheduling by module, with the modules of one shared environment
    as one unit; units go out in the order collected (the long environments first,
    as scripts/run_tests names the suites)."""

    def _split_scope(self, nodeid: str) -> str:
        return group_of(nodeid)


def make_scheduler(config: pytest.Config, log: Any) -> SharedEnvironmentScheduling | None:
    if config.getvalue("dist") != "loadscope":
        return None  # another --dist asked for: xdist's own
    return SharedEnvironmentScheduling(config, log)


def check_groups(items: list[pytest.Item]) -> None:
    misplaced = []
    for item in items:
        used = getattr(item, "fixturenames", ())
        for name in SHARED_ENVIRONMENTS:
            if name in used and group_of(item.nodeid) != name:
                misplaced.append(f"{item.nodeid.split('::', 1)[0]} uses {name}")
    if misplaced:
        raise pytest.UsageError(
            "add to tests/xdist_groups.SHARED_ENVIRONMENTS (or each worker brings up its "
            "own environment): " + "; ".join(sorted(set(misplaced))))
