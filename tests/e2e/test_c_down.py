"""Last of the end-to-end tests: `cdpipe down` leaves nothing behind."""

from __future__ import annotations

import json

import psutil
import pytest

from cdpipe.providers.local import port_in_use
from tests.e2e.conftest import LocalEnv

pytestmark = pytest.mark.e2e


@pytest.mark.takes_env_down  # conftest runs it after every other test of local_env
def test_down_leaves_nothing_running(local_env: LocalEnv) -> None:
    home = str(local_env.home)
    assert (local_env.home / "venvs").is_dir()  # the sandboxes' shared app environments
    local_env.cdpipe("down")
    leftovers = []
    for proc in psutil.process_iter(["cmdline", "cwd"]):
        text = " ".join(proc.info["cmdline"] or []) + " " + (proc.info["cwd"] or "")
        if home in text:
            leftovers.append(proc.info)
    assert leftovers == []
    assert not any(port_in_use(p) for p in range(local_env.port_base, local_env.port_base + 40))
    assert json.loads(local_env.cdpipe("status", "--json").stdout)["instances"] == []
    assert not (local_env.home / "instances").exists() or not any(
        (local_env.home / "instances").iterdir())
    assert not (local_env.home / "venvs").exists()
