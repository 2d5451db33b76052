"""Counting the AWS API calls a piece of cdpipe makes: every boto3 client made while a
``Calls`` is installed records the name of each call it sends (botocore's before-call
event), for the benchmark and the tests that hold cdpipe to its call budget."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import boto3


class Calls:
    """Installs itself on ``boto3.session.Session.client`` through ``patch`` (a test
    passes ``monkeypatch.setattr``, which undoes it; the default stays for the process)."""

    def __init__(self, patch: Callable[[Any, str, Any], None] = setattr) -> None:
        self.names: list[str] = []
        real = boto3.session.Session.client

        def client(session: Any, *args: Any, **kwargs: Any) -> Any:
            made = real(session, *args, **kwargs)
            made.meta.events.register("before-call.*.*", self._count)
            return made
        patch(boto3.session.Session, "client", client)

    def _count(self, event_name: str, **kwargs: Any) -> None:
        self.names.append(event_name.rsplit(".", 1)[-1])

    def during(self, action: Callable[[], Any]) -> Counter[str]:
        """The calls ``action()`` makes, by name."""
        self.names.clear()
        action()
        return Counter(self.names)
