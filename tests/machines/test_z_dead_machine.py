"""The last machine test of the session: a dead prod machine (stopped, never started
again) is reported unhealthy and the proxy routes around it."""

from __future__ import annotations

from rig.podman import podman
from tests.e2e.load import count_requests
from tests.machines.conftest import MachinesEnv
from tests.support import wait_until


def test_a_dead_machine_is_unhealthy_and_the_proxy_routes_around_it(
        deployed: MachinesEnv) -> None:
    prod = deployed.instance_id("prod")
    podman("stop", "--time", "5", deployed.machine(prod))
    healthy: dict[str, bool] = {}

    def only_prod_down() -> bool:
        # The monitor's machine may still be settling after the self-scaling test gave
        # it its settings back: the others are waited for, a while.
        healthy.clear()
        healthy.update({i["id"]: i["healthy"] for i in deployed.status()["instances"]})
        return all(ok for iid, ok in healthy.items() if iid != prod)
    wait_until(only_prod_down, 90, "every machine but prod's healthy")
    assert healthy[prod] is False
    proxy = f"http://{deployed.address('proxy')}/"
    # HAProxy's health checks take the dead server out within a few seconds.
    wait_until(lambda: all(s.status == 200 for s in count_requests(proxy, 20)), 30,
               "every request answered while prod's machine is dead")
    samples = count_requests(proxy, 100)
    assert [s for s in samples if s.status != 200] == []
    assert {s.role for s in samples} == {"canary"}
