"""The environment's Redis users (ACL): the name each client connects as, and where
its password lives. What each user may do is the redis role's (``redis_acl_users`` in
``roles/redis/defaults/main.yml``; a unit test keeps the two in step):

- ``admin``: everything (the only user that may FLUSHALL, CONFIG, KEYS, MONITOR...);
- ``operator``: reads and writes ``flag:*`` and ``canary:*`` (redis-cli, the CLI, a
  dashboard); reads ``lock:environment``, ``monitor:*``, ``servers:*`` and
  ``deploy:*``, and may PSUBSCRIBE to the keyspace notifications of all it reads
  (``cdpipe_host.keys.OPERATOR_CHANNELS``; the dashboard's live updates);
- ``deployer``: writes the server lists ``servers:*``, the canary's initial weight and
  the deploy history ``deploy:*``;
  used only by registration and drain on the proxy host and by the control machine's
  scale path, never by an app machine;
- ``controller``: the proxy controller, reads ``servers:*`` and ``canary:*`` and their
  notifications;
- ``monitor``: its own ``monitor:*`` keys, ``canary:alert``, reads ``servers:*``;
- ``app``: reads ``flag:*`` and their notifications (the canary runs untested code).
"""

from __future__ import annotations

ADMIN = "admin"
OPERATOR = "operator"
DEPLOYER = "deployer"
CONTROLLER = "controller"
MONITOR = "monitor"
APP = "app"
USERS = (ADMIN, OPERATOR, DEPLOYER, CONTROLLER, MONITOR, APP)


def password_name(user: str) -> str:
    """The secret's name (its file in the secrets directory): ``redis_<user>_password``."""
    if user not in USERS:
        raise ValueError(f"unknown Redis user {user!r}")
    return f"redis_{user}_password"
