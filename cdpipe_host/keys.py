"""Every Redis key of the runtime contract (DESIGN.md), and the keyspace-notification
patterns readers subscribe to. The one home of these names: the app, the proxy
controller, the monitor, the discovery command and the CLI import them from here.

Keys an operator drives (plain strings, so ``redis-cli SET`` works):
``flag:<name>``, ``canary:alert``, ``canary:weight``; the discovery service:
``servers:<role>`` (hash instance id -> host:port). The monitor's own keys:
``monitor:alerts`` (hash alert -> state JSON), ``monitor:outbox`` (list of mail JSON),
``monitor:outbox:dead`` (mail set aside: it could not be sent, or was not a message),
``monitor:scale:last`` (time of the last scale action), ``monitor:scale:failing`` (hash
direction -> JSON of a failing streak of scale actions, so a restarted monitor does not
mail it again). The control plane's: ``lock:environment`` (the environment lock's owner
while a deploy, scale or up runs; see ``cdpipe.env_lock``).
"""

from __future__ import annotations

DB = 0
FLAG_PREFIX = "flag:"
CANARY_PREFIX = "canary:"
CANARY_ALERT = f"{CANARY_PREFIX}alert"
CANARY_WEIGHT = f"{CANARY_PREFIX}weight"
SERVERS_PREFIX = "servers:"
MONITOR_ALERTS = "monitor:alerts"
MONITOR_OUTBOX = "monitor:outbox"
MONITOR_OUTBOX_DEAD = f"{MONITOR_OUTBOX}:dead"
MONITOR_SCALE_LAST = "monitor:scale:last"
ENV_LOCK = "lock:environment"
MONITOR_SCALE_FAILING = "monitor:scale:failing"

FLAGS_PATTERN = f"{FLAG_PREFIX}*"


def flag_key(name: str) -> str:
    return f"{FLAG_PREFIX}{name}"


def flag_name(key: str) -> str:
    """``flag:<name>`` -> ``<name>``."""
    return key.removeprefix(FLAG_PREFIX)


def servers_key(role: str) -> str:
    return f"{SERVERS_PREFIX}{role}"


def keyspace_channel(key_pattern: str) -> str:
    """The keyspace-notification channel (pattern) of a key (pattern) in our database."""
    return f"__keyspace@{DB}__:{key_pattern}"


def key_of_channel(channel: str) -> str:
    """The key a keyspace notification is about: ``__keyspace@0__:flag:x`` -> ``flag:x``."""
    return channel.split(":", 1)[1]


# What each reader subscribes to.
FLAGS_CHANNEL = keyspace_channel(FLAGS_PATTERN)
CONTROLLER_CHANNELS = (keyspace_channel(f"{SERVERS_PREFIX}*"),
                       keyspace_channel(f"{CANARY_PREFIX}*"))
