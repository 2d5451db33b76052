"""``cdpipe dashboard``: one page that shows production live and steers flags and the
canary through the same functions as the CLI (``cdpipe.controls``,
``cdpipe canary promote|rollback``).

- ``server``: the aiohttp application (page, JSON, Server-Sent Events, actions);
- ``source``: the environment as the page reads it (the state, Redis, HAProxy's stats);
- ``actor``: the narrow command a dashboard without rights of its own acts through;
- ``live``: keyspace notifications of the environment's Redis pushed to every page;
- ``view``: what the page shows, read from Redis, the state and HAProxy, by section;
- ``traffic``: requests and 5xx per second from HAProxy's counters;
- ``sessions``: the operator's login (session cookie and CSRF token);
- ``jobs``: promote and rollback, run as the CLI runs them, one at a time.
"""

from __future__ import annotations

