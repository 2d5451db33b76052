"""The controller's rendering and membership rules, with a fake HAProxy runtime."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from cdpipe_host.edge import server_cookie
from cdpipe_host.haproxy import AdminState, OpState, ServerState
from cdpipe_host.proxy.controller import Controller
from cdpipe_host.proxy.desired import Desired, Server
from cdpipe_host.proxy.render import parse_servers, render
from cdpipe_host.proxy.settings import ControllerConfig

BASE = """\
global
    maxconn 100
defaults
    mode http
    timeout connect 1s
    timeout client 1s
    timeout server 1s
frontend www
    bind 127.0.0.1:65001
    default_backend app
backend app
    balance roundrobin
    cookie S insert indirect nocache
"""


KEY = "test-cookie-key"


def cookie(name: str) -> str:
    return server_cookie(KEY, name)


def desired(**servers: str) -> Desired:
    d = Desired()
    for name, addr in servers.items():
        d.servers[name] = Server(name, addr, "canary" if name.startswith("canary") else "prod")
    return d


def test_render_round_trips_and_is_valid_haproxy(tmp_path: Path) -> None:
    want = desired(**{"prod-1": "127.0.0.1:9001", "canary-1": "127.0.0.1:9002"})
    text = render(BASE, want.servers, want, KEY)
    assert parse_servers(text) == want.servers
    assert (f"server prod-1 127.0.0.1:9001 weight 256 cookie {cookie('prod-1')}  #role=prod"
            in text)
    assert (f"server canary-1 127.0.0.1:9002 weight 126 cookie {cookie('canary-1')}"
            "  #role=canary" in text)
    cfg = tmp_path / "h.cfg"
    cfg.write_text(text)
    check = subprocess.run(["haproxy", "-c", "-f", str(cfg)], capture_output=True)
    assert check.returncode == 0, check.stderr


def test_persistence_cookies_are_opaque_and_stable() -> None:
    """A server's cookie value names it to no one without the key, and stays the same
    from one render (a reload, a restart, a runtime add) to the next."""
    want = desired(**{"prod-1": "127.0.0.1:9001", "canary-1": "127.0.0.1:9002"})
    text = render(BASE, want.servers, want, KEY)
    values = {cookie("prod-1"), cookie("canary-1")}
    assert len(values) == 2
    assert all("prod" not in v and "canary" not in v for v in values)
    assert render(BASE, want.servers, want, KEY) == text
    assert cookie("canary-1") != server_cookie("another-key", "canary-1")
    with pytest.raises(ValueError, match="needs a key"):
        server_cookie("", "canary-1")


def test_alert_and_draining_servers_are_rendered_disabled() -> None:
    want = desired(**{"prod-1": "127.0.0.1:9001", "canary-1": "127.0.0.1:9002"})
    want.canary_alert = True
    members = dict(want.servers) | {"prod-2": Server("prod-2", "127.0.0.1:9003", "prod")}
    text = render(BASE, members, want, KEY)
    assert f"cookie {cookie('canary-1')} disabled" in text
    assert f"cookie {cookie('prod-2')} disabled" in text  # removed from Redis: draining
    assert f"cookie {cookie('prod-1')}  #" in text


def test_the_last_serving_server_stays_in_rotation_under_the_canary_alert(
        controller: Controller) -> None:
    """One prod drained for a deploy (gone from servers:prod) while the alert holds the
    canary out: nothing would serve, and every request would fail. The canary stays in
    (file and runtime); with another prod serving it is held out as before."""
    want = desired(**{"canary-1": "127.0.0.1:9002"})
    want.canary_alert = True
    members = dict(want.servers) | {"prod-1": Server("prod-1", "127.0.0.1:9001", "prod")}
    text = render(BASE, members, want, KEY)
    assert f"cookie {cookie('canary-1')}  #" in text  # not disabled
    assert f"cookie {cookie('prod-1')} disabled" in text  # draining
    runtime = FakeRuntime({"prod-1": state("prod-1", 256), "canary-1": state("canary-1", 1)})
    controller.runtime = runtime  # type: ignore[assignment]
    controller.apply_runtime(want, members)
    assert "state prod-1 maint" in runtime.commands
    assert "state canary-1 maint" not in runtime.commands
    # A second prod serving: the canary under alert is held out.
    want.servers["prod-2"] = Server("prod-2", "127.0.0.1:9003", "prod")
    members["prod-2"] = want.servers["prod-2"]
    runtime = FakeRuntime({name: state(name, 1) for name in members})
    controller.runtime = runtime  # type: ignore[assignment]
    controller.apply_runtime(want, members)
    assert "state canary-1 maint" in runtime.commands
    assert f"cookie {cookie('canary-1')} disabled" in render(BASE, members, want, KEY)


class FakeRuntime:
    def __init__(self, states: dict[str, ServerState]) -> None:
        self.states = states
        self.commands: list[str] = []

    def servers(self, backend: str) -> dict[str, ServerState]:
        return self.states

    def set_state(self, backend: str, server: str, state: str) -> None:
        self.commands.append(f"state {server} {state}")

    def set_weight(self, backend: str, server: str, weight: int) -> None:
        self.commands.append(f"weight {server} {weight}")


@pytest.fixture
def controller(tmp_path: Path) -> Controller:
    cfg = ControllerConfig(redis_url="redis://127.0.0.1:1/0", base_file=str(tmp_path / "b"),
                           config_file=str(tmp_path / "c"), socket=str(tmp_path / "s"),
                           cookie_key=KEY, reload_command="true", drain_timeout_seconds=5)
    return Controller(cfg)


def state(name: str, weight: int, maint: bool = False) -> ServerState:
    admin = AdminState.FORCED_MAINT if maint else AdminState(0)
    return ServerState(name, "127.0.0.1", 1, OpState.RUNNING, admin, weight)


def test_runtime_kill_switch_and_weights(controller: Controller) -> None:
    fake = FakeRuntime({"prod-1": state("prod-1", 256), "canary-1": state("canary-1", 126)})
    controller.runtime = fake  # type: ignore[assignment]
    want = desired(**{"prod-1": "127.0.0.1:9001", "canary-1": "127.0.0.1:9002"})
    want.canary_alert = True
    controller.apply_runtime(want, want.servers)
    assert fake.commands == ["state canary-1 maint"]
    fake.commands.clear()
    fake.states["canary-1"] = state("canary-1", 126, maint=True)
    want.canary_alert = False
    want.canary_weight = 50
    controller.apply_runtime(want, want.servers)
    assert fake.commands == ["weight canary-1 256", "state canary-1 ready"]


def test_new_server_joins_only_when_healthy(controller: Controller) -> None:
    want = desired(**{"prod-1": "127.0.0.1:9001", "prod-2": "127.0.0.1:9003"})
    configured = {"prod-1": want.servers["prod-1"]}
    controller.healthy = lambda server: False  # type: ignore[method-assign]
    assert set(controller.plan_membership(want, configured, {})) == {"prod-1"}
    controller.healthy = lambda server: True  # type: ignore[method-assign]
    assert set(controller.plan_membership(want, configured, {})) == {"prod-1", "prod-2"}


def test_removed_server_stays_until_drained(controller: Controller) -> None:
    want = desired(**{"prod-1": "127.0.0.1:9001"})
    configured = dict(want.servers) | {"prod-2": Server("prod-2", "127.0.0.1:9003", "prod")}
    assert "prod-2" in controller.plan_membership(want, configured, {"prod-2": 3})
    assert "prod-2" not in controller.plan_membership(want, configured, {"prod-2": 0})
