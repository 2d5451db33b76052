"""Free ports on 127.0.0.1: one for a server of a test, or a block for a cdpipe home."""

from __future__ import annotations

import socket


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_port_block(size: int = 100, start: int = 20000) -> int:
    """The first port p >= start, in steps of ``size``, with p .. p+size-1 all free."""
    from cdpipe.providers.local import port_in_use

    for base in range(start, 60000, size):
        if not any(port_in_use(p) for p in range(base, base + size)):
            return base
    raise RuntimeError("no free block of loopback ports")
