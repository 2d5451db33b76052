"""haproxy.cfg as text: the base file plus one line per server (pure functions).

A server's persistence cookie value is a signature of its name (``cookie_key``), the
same at every render, so it survives reloads and restarts and a client cannot derive it.
"""

from __future__ import annotations

from cdpipe_host.edge import server_cookie
from cdpipe_host.proxy.desired import Desired, Server, weights

ROLE_MARK = "#role="
SERVERS_COMMENT = "    # servers: written by the proxy controller from Redis"


def parse_servers(config_text: str) -> dict[str, Server]:
    """Servers of the rendered file, from the lines this controller writes."""
    servers: dict[str, Server] = {}
    for line in config_text.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[0] == "server" and ROLE_MARK in line:
            role = line.rsplit(ROLE_MARK, 1)[1].strip()
            servers[fields[1]] = Server(fields[1], fields[2], role)
    return servers


def render(base: str, servers: dict[str, Server], desired: Desired, cookie_key: str) -> str:
    role_weight = weights(servers, desired)
    lines = [base.rstrip("\n"), SERVERS_COMMENT]
    held = desired.held_out_of(servers.values())
    for server in sorted(servers.values(), key=lambda s: (s.role != "prod", s.name)):
        off = server.name in held
        lines.append(
            f"    server {server.name} {server.address} weight {role_weight[server.role]}"
            f" cookie {server_cookie(cookie_key, server.name)}{' disabled' if off else ''}"
            f"  {ROLE_MARK}{server.role}"
        )
    return "\n".join(lines) + "\n"
