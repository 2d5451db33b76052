"""One retry loop for AWS's eventual consistency: a call AWS refuses for a while (a
new instance profile EC2 does not see yet, a security group whose instances' network
interfaces are still going) is made again after 2, 4, 8, 15, 15... seconds."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import botocore.exceptions

from cdpipe.errors import CdpipeError

FIRST_RETRY_DELAY = 2.0
MAX_RETRY_DELAY = 15.0
T = TypeVar("T")


def retry_with_backoff(call: Callable[[], T], *,
                       transient: Callable[[botocore.exceptions.ClientError], bool],
                       limit: float, waiting: Callable[[float], None],
                       gave_up: Callable[[], CdpipeError]) -> T:
    """``call()`` until it returns, while it fails with an error ``transient`` accepts,
    for at most ``limit`` seconds; then the error ``gave_up()`` makes. Any other error
    goes up at once. ``waiting(seconds)`` is told before each wait (progress)."""
    deadline = time.monotonic() + limit
    delay = FIRST_RETRY_DELAY
    while True:
        try:
            return call()
        except botocore.exceptions.ClientError as exc:
            if not transient(exc):
                raise
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise gave_up() from None
            wait = min(delay, remaining)
            waiting(wait)
            time.sleep(wait)
            delay = min(delay * 2, MAX_RETRY_DELAY)
