"""Every Redis key of the runtime contract (docs/architecture.md, "The runtime contract
in Redis"), and the keyspace-notification patterns readers subscribe to. The one home
of these names: the app, the proxy controller, the monitor, the discovery command and
the CLI import them from here.

Keys an operator drives (plain strings, so ``redis-cli SET`` works):
``flag:<name>``, ``canary:alert``, ``canary:weight``; the discovery service:
``servers:<role>`` (hash instance id -> host:port). The monitor's own keys:
``monitor:alerts`` (hash alert -> state JSON), ``monitor:outbox`` (list of mail JSON),
``monitor:outbox:dead`` (mail set aside: it could not be sent, or was not a message),
``monitor:scale:last`` (time of the last scale action), ``monitor:scale:failing`` (hash
direction -> JSON of a failing streak of scale actions, so a restarted monitor does not
mail it again). What the monitor records for the dashboard to read (``cdpipe
.records``): ``monitor:samples`` (hash instance id -> JSON of its last polls),
``monitor:canary:verdict`` (JSON of the canary judge's latest verdict),
``monitor:alerts:history`` and ``monitor:scale:events`` (lists of JSON, newest first).
The control plane's: ``lock:environment`` (the environment lock's owner while a deploy,
scale or up runs; see ``cdpipe.env_lock``) and ``deploy:history`` (list of JSON, one per
deploy, newest first). Every history list keeps its newest ``HISTORY_LENGTH`` entries
(LTRIM after each LPUSH, in the same transaction).
"""

from __future__ import annotations

DB = 0
FLAG_PREFIX = "flag:"
CANARY_PREFIX = "canary:"
CANARY_ALERT = f"{CANARY_PREFIX}alert"
CANARY_WEIGHT = f"{CANARY_PREFIX}weight"
SERVERS_PREFIX = "servers:"
MONITOR_PREFIX = "monitor:"
MONITOR_ALERTS = f"{MONITOR_PREFIX}alerts"
MONITOR_OUTBOX = f"{MONITOR_PREFIX}outbox"
MONITOR_OUTBOX_DEAD = f"{MONITOR_OUTBOX}:dead"
MONITOR_SCALE_LAST = f"{MONITOR_PREFIX}scale:last"
LOCK_PREFIX = "lock:"
ENV_LOCK = f"{LOCK_PREFIX}environment"
MONITOR_SCALE_FAILING = f"{MONITOR_PREFIX}scale:failing"
MONITOR_SAMPLES = f"{MONITOR_PREFIX}samples"
MONITOR_CANARY_VERDICT = f"{MONITOR_PREFIX}canary:verdict"
MONITOR_ALERT_HISTORY = f"{MONITOR_PREFIX}alerts:history"
MONITOR_SCALE_EVENTS = f"{MONITOR_PREFIX}scale:events"
DEPLOY_PREFIX = "deploy:"
DEPLOY_HISTORY = f"{DEPLOY_PREFIX}history"
HISTORY_LENGTH = 100  # entries kept in each history list

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
# The operator (the dashboard's live updates): every key it may read.
OPERATOR_CHANNELS = tuple(keyspace_channel(f"{prefix}*") for prefix in (
    FLAG_PREFIX, CANARY_PREFIX, MONITOR_PREFIX, SERVERS_PREFIX, DEPLOY_PREFIX, LOCK_PREFIX))
