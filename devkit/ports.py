"""Free ports on 127.0.0.1: one for a server of a test, or a block for a cdpipe home."""

from __future__ import annotations

import os
import socket

# Two test processes looking for a free block at the same moment would find the same
# one (nothing listens yet); each pytest-xdist worker (PYTEST_XDIST_WORKER=gw<N>)
# therefore looks from its own offset.
WORKER_SPAN = 4000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def worker_offset() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    index = worker.removeprefix("gw")
    return WORKER_SPAN * int(index) if index.isdigit() else 0


def free_port_block(size: int = 100, start: int = 20000) -> int:
    """The first port p >= start (plus this test worker's offset), in steps of ``size``,
    with p .. p+size-1 all free."""
    from cdpipe.providers.local import port_in_use

    for base in range(start + worker_offset(), 60000, size):
        if not any(port_in_use(p) for p in range(base, base + size)):
            return base
    raise RuntimeError("no free block of loopback ports")
