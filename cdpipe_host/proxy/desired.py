"""What Redis asks of the proxy: the servers of each app role, the canary's weight and
its alert, read in one round trip and validated; and the HAProxy weights that give the
canary its share. Pure but for ``read_desired``."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

import redis

from cdpipe_host.discovery import APP_ROLES
from cdpipe_host.keys import CANARY_ALERT, CANARY_WEIGHT, servers_key
from cdpipe_host.names import OnceLog, server_entries
from cdpipe_host.values import DEFAULT_CANARY_WEIGHT, read_alert, read_weight, text, texts

log = logging.getLogger("proxy-controller")


@dataclass(frozen=True)
class Server:
    name: str
    address: str  # host:port
    role: str


@dataclass
class Desired:
    servers: dict[str, Server] = field(default_factory=dict)
    canary_weight: int = DEFAULT_CANARY_WEIGHT
    canary_alert: bool = False

    def held_out(self, server: Server) -> bool:
        """Not to take new requests: no longer wanted, or a canary under alert."""
        return server.name not in self.servers or (server.role == "canary"
                                                   and self.canary_alert)

    def held_out_of(self, members: Iterable[Server]) -> set[str]:
        """The members not to take new requests (``held_out``), but never all of them:
        when none would be left serving (one prod drained for a deploy while the alert
        holds the canary out), the wanted ones held out by the alert alone stay in. An
        empty backend fails every request; a failing canary fails some."""
        members = list(members)
        held = {s.name for s in members if self.held_out(s)}
        if members and len(held) == len(members):
            held -= {s.name for s in members if s.name in self.servers}
        return held


# Invalid server entries are logged once per controller process, not on every pass.
SKIPPED = OnceLog(log)


def read_desired(client: redis.Redis) -> Desired:
    pipe = client.pipeline(transaction=False)
    for role in APP_ROLES:
        pipe.hgetall(servers_key(role))
    pipe.get(CANARY_WEIGHT)
    pipe.get(CANARY_ALERT)
    *hashes, weight, alert = pipe.execute()
    desired = Desired(canary_weight=read_weight(text(weight)),
                      canary_alert=read_alert(text(alert)))
    for role, entries in zip(APP_ROLES, hashes, strict=True):
        for name, address in server_entries(servers_key(role), texts(entries),
                                            SKIPPED).items():
            desired.servers[name] = Server(name, address, role)
    return desired


def haproxy_weights(canary_percent: int, prod_count: int, canary_count: int) -> tuple[int, int]:
    """(weight of each prod server, weight of each canary server) for HAProxy (0-256).

    The canary servers together get ``canary_percent`` of all requests, the prod
    servers share the rest equally, whatever their number. Weights are scaled so the
    larger of the two is 256, which keeps rounding error under 0.4%.
    """
    if canary_count == 0:
        return (1 if prod_count else 0), 0
    if prod_count == 0:
        return 0, 1
    prod_each = (100 - canary_percent) / prod_count
    canary_each = canary_percent / canary_count
    scale = 256 / max(prod_each, canary_each)
    return round(prod_each * scale), round(canary_each * scale)


def weights(members: dict[str, Server], desired: Desired) -> dict[str, int]:
    """Weight of each role's servers, counting only servers that are wanted."""
    wanted = [s for s in members.values() if s.name in desired.servers]
    prod_w, canary_w = haproxy_weights(
        desired.canary_weight,
        sum(1 for s in wanted if s.role == "prod"),
        sum(1 for s in wanted if s.role == "canary"),
    )
    return {"prod": prod_w, "canary": canary_w}
