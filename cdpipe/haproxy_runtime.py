"""A client of HAProxy's runtime API on its UNIX socket (one command per connection).

Standard library only: copied to the proxy host beside the controller.
"""

from __future__ import annotations

import csv
import io
import socket
from dataclasses import dataclass

# srv_admin_state bits (management.txt): 0x01 forced maintenance, 0x08 drain...
ADMIN_FORCED_MAINT = 0x01
# srv_op_state: 0 stopped, 1 starting, 2 running, 3 stopping
OP_RUNNING = 2


class HAProxyError(Exception):
    """HAProxy refused a command or could not be reached."""


@dataclass(frozen=True)
class ServerState:
    name: str
    address: str
    port: int
    op_state: int
    admin_state: int
    weight: int

    @property
    def in_maintenance(self) -> bool:
        return bool(self.admin_state & ADMIN_FORCED_MAINT)


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

    def servers(self, backend: str) -> dict[str, ServerState]:
        out = self.command(f"show servers state {backend}")
        states: dict[str, ServerState] = {}
        for line in out.splitlines():
            fields = line.split()
            if len(fields) < 19 or line.startswith("#") or not fields[0].isdigit():
                continue
            states[fields[3]] = ServerState(
                name=fields[3], address=fields[4], port=int(fields[18]),
                op_state=int(fields[5]), admin_state=int(fields[6]), weight=int(fields[7]),
            )
        return states

    def stats(self) -> list[dict[str, str]]:
        out = self.command("show stat")
        text = out.lstrip("# ")
        return list(csv.DictReader(io.StringIO(text)))

    def set_weight(self, backend: str, server: str, weight: int) -> None:
        self._ok(self.command(f"set weight {backend}/{server} {weight}"))

    def set_state(self, backend: str, server: str, state: str) -> None:
        self._ok(self.command(f"set server {backend}/{server} state {state}"))

    @staticmethod
    def _ok(reply: str) -> None:
        """These commands answer nothing on success and one line on failure."""
        if reply.strip():
            raise HAProxyError(reply.strip())
