"""The history lists of the runtime records (``monitor:alerts:history``,
``monitor:scale:events``, ``deploy:history``): JSON entries, newest first, the newest
``HISTORY_LENGTH`` kept."""

from __future__ import annotations

import json
from typing import Any

import redis

from cdpipe_host.keys import HISTORY_LENGTH


def push(pipe: redis.client.Pipeline, key: str, entry: dict[str, Any]) -> None:
    """Queues on ``pipe`` the LPUSH of ``entry`` (as JSON) to ``key`` and the LTRIM that
    keeps the newest ``HISTORY_LENGTH``: one transaction when the pipeline is one."""
    pipe.lpush(key, json.dumps(entry))
    pipe.ltrim(key, 0, HISTORY_LENGTH - 1)


def record(r: redis.Redis, key: str, entry: dict[str, Any]) -> None:
    """LPUSH + LTRIM of one entry in a transaction of its own. RedisError goes up."""
    pipe = r.pipeline(transaction=True)
    push(pipe, key, entry)
    pipe.execute()
