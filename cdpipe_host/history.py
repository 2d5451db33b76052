"""The history lists of the runtime records (``monitor:alerts:history``,
``monitor:scale:events``, ``deploy:history``): JSON entries, newest first, the newest
``HISTORY_LENGTH`` kept. Each entry is the JSON of its record model
(``monitoring.records``: AlertEvent, ScaleEvent, DeployRecord)."""

from __future__ import annotations

import redis

from cdpipe_host.keys import HISTORY_LENGTH


def push(pipe: redis.client.Pipeline, key: str, entry: str) -> None:
    """Queues on ``pipe`` the LPUSH of ``entry`` (JSON) to ``key`` and the LTRIM that
    keeps the newest ``HISTORY_LENGTH``: one transaction when the pipeline is one."""
    pipe.lpush(key, entry)
    pipe.ltrim(key, 0, HISTORY_LENGTH - 1)


def record(r: redis.Redis, key: str, entry: str) -> None:
    """LPUSH + LTRIM of one entry in a transaction of its own. RedisError goes up."""
    pipe = r.pipeline(transaction=True)
    push(pipe, key, entry)
    pipe.execute()
