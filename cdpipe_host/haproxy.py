"""HAProxy as this project reads and drives it: its runtime API on a UNIX socket (one
command per connection), and the one parser of its server lists: ``show servers
state`` and the stats CSV (``show stat`` on the socket, ``/;csv`` on the stats page).
Server states have names here, after HAProxy's management guide.
"""

from __future__ import annotations

import csv
import io
import re
import socket
import subprocess
from dataclasses import dataclass
from enum import IntEnum, IntFlag

# The backend of the app servers, in haproxy.cfg and in every command here.
APP_BACKEND = "app"
# Rows of the stats CSV that sum up a proxy rather than name a server.
SUMMARY_ROWS = frozenset({"FRONTEND", "BACKEND"})
RESPONSE_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx", "other")


class OpState(IntEnum):
    """srv_op_state of ``show servers state``."""

    STOPPED = 0
    STARTING = 1
    RUNNING = 2
    STOPPING = 3


class AdminState(IntFlag):
    """srv_admin_state bits of ``show servers state``."""

    FORCED_MAINT = 0x01
    INHERITED_MAINT = 0x02
    CONFIG_MAINT = 0x04
    FORCED_DRAIN = 0x08
    INHERITED_DRAIN = 0x10
    RESOLUTION_MAINT = 0x20
    HOSTNAME_MAINT = 0x40


class HAProxyError(Exception):
    """HAProxy refused a command or could not be reached."""


@dataclass(frozen=True)
class ServerState:
    """One server of ``show servers state``."""

    name: str
    address: str
    port: int
    op_state: OpState
    admin_state: AdminState
    weight: int

    @property
    def in_maintenance(self) -> bool:
        return AdminState.FORCED_MAINT in self.admin_state

    @property
    def draining(self) -> bool:
        return bool(self.admin_state & (AdminState.FORCED_DRAIN | AdminState.INHERITED_DRAIN))

    @property
    def in_rotation(self) -> bool:
        """Running, neither in maintenance nor draining: it takes new requests."""
        return (self.op_state == OpState.RUNNING and not self.in_maintenance
                and not self.draining)


@dataclass(frozen=True)
class ServerStats:
    """One server's row of the stats CSV (counters since HAProxy last reloaded)."""

    name: str
    status: str  # UP, DOWN, MAINT, "UP 1/2"...
    weight: int
    sessions: int  # current connections (scur)
    responses: int
    errors_5xx: int
    # Requests sent to it (lbtot), and those that failed there: its 5xx, and the
    # response and connection errors HAProxy answered with a 502/503/504 itself
    # (eresp, econ: a server that closed the connection, a worker timed out).
    selected: int = 0
    failed: int = 0


def parse_servers_state(out: str) -> dict[str, ServerState]:
    """``show servers state <backend>`` (format version 1) -> servers by name."""
    states: dict[str, ServerState] = {}
    for line in out.splitlines():
        fields = line.split()
        if len(fields) < 19 or line.startswith("#") or not fields[0].isdigit():
            continue
        states[fields[3]] = ServerState(
            name=fields[3], address=fields[4], port=int(fields[18]),
            op_state=OpState(int(fields[5])), admin_state=AdminState(int(fields[6])),
            weight=int(fields[7]),
        )
    return states


def _count(row: dict[str, str], column: str) -> int:
    value = row.get(column) or "0"
    return int(value) if value.isdigit() else 0


def parse_stats_csv(text: str, backend: str = APP_BACKEND) -> dict[str, ServerStats]:
    """The stats CSV (its header line starts with ``# ``) -> the servers of one backend."""
    rows = csv.DictReader(io.StringIO(text.lstrip("# ")))
    servers: dict[str, ServerStats] = {}
    for row in rows:
        name = row.get("svname") or ""
        if row.get("pxname") != backend or name in SUMMARY_ROWS:
            continue
        servers[name] = ServerStats(
            name=name, status=row.get("status") or "?", weight=_count(row, "weight"),
            sessions=_count(row, "scur"),
            responses=sum(_count(row, f"hrsp_{c}") for c in RESPONSE_CLASSES),
            errors_5xx=_count(row, "hrsp_5xx"), selected=_count(row, "lbtot"),
            failed=sum(_count(row, c) for c in ("hrsp_5xx", "eresp", "econ")),
        )
    return servers


class HAProxyRuntime:
    def __init__(self, socket_path: str, timeout: float = 2.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def command(self, line: str) -> str:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.timeout)
                sock.connect(self.socket_path)
                sock.sendall(line.encode() + b"\n")
                chunks = []
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
        except OSError as exc:
            raise HAProxyError(f"HAProxy runtime API at {self.socket_path}: {exc}") from exc
        return b"".join(chunks).decode()

    def servers(self, backend: str = APP_BACKEND) -> dict[str, ServerState]:
        return parse_servers_state(self.command(f"show servers state {backend}"))

    def stats(self, backend: str = APP_BACKEND) -> dict[str, ServerStats]:
        return parse_stats_csv(self.command("show stat"), backend)

    def set_weight(self, backend: str, server: str, weight: int) -> None:
        self._ok(self.command(f"set weight {backend}/{server} {weight}"))

    def set_state(self, backend: str, server: str, state: str) -> None:
        self._ok(self.command(f"set server {backend}/{server} state {state}"))

    @staticmethod
    def _ok(reply: str) -> None:
        """These commands answer nothing on success and one line on failure."""
        if reply.strip():
            raise HAProxyError(reply.strip())


class ConfigRejected(HAProxyError):
    """``haproxy -c`` refused a configuration file; the message is HAProxy's own."""


# "[ALERT]    (1234) : config : parsing [f.cfg:10] : unknown keyword ..." -> the text.
_ALERT = re.compile(r"^\[ALERT\]\s+(?:\(\d+\)\s+)?:\s*(?:config\s*:\s*)?(?P<text>.*)$")


def check_config(binary: str, path: str) -> str | None:
    """None if HAProxy accepts the file, else its own reasons on one line (its ALERT
    lines; ``-q`` is not used because it silences them too)."""
    check = subprocess.run([binary, "-c", "-f", path], capture_output=True, text=True,
                           check=False, timeout=60)
    if check.returncode == 0:
        return None
    output = (check.stderr + "\n" + check.stdout).strip()
    alerts = [m["text"].strip() for line in output.splitlines()
              if (m := _ALERT.match(line.strip()))]
    return "; ".join(alerts) or output or f"haproxy -c exited with {check.returncode}"
