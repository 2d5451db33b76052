"""The edge of the service, defined once: which of the app's routes the proxy lets
clients reach, and the signed values of the two cookies a client holds.

- Public routes: the proxy forwards only these paths (exact match). ``/metrics``,
  ``/burn`` and ``/healthz`` with its details are for the monitor and the operator,
  who reach instances directly; the proxy answers its own, detail-free health check
  on ``PUBLIC_HEALTH_PATH``.
- The user id cookie (``USER_COOKIE``): ``<id>.<signature>``, set by the app on a first
  visit and signed with the app's secret, so a client cannot choose its rollout bucket.
- The persistence cookie: HAProxy's cookie value of a server is a signature of its
  name with the proxy's key, so a client cannot name a server (the canary) in it.
"""

from __future__ import annotations

import hashlib
import hmac

PUBLIC_PATHS = ("/", "/hiddenfeature", "/greeting")
PUBLIC_HEALTH_PATH = "/healthz"
USER_COOKIE = "cdpipe_uid"
# A user id as the app makes it (uuid4 hex), or as a trusted upstream sends it.
MAX_USER_ID_LENGTH = 128


def signature(key: str, purpose: str, value: str, length: int = 32) -> str:
    """HMAC-SHA256 of ``value`` for one ``purpose``, hex, cut to ``length`` characters."""
    mac = hmac.new(key.encode(), f"{purpose}\0{value}".encode(), hashlib.sha256)
    return mac.hexdigest()[:length]


def valid_user_id(uid: str) -> bool:
    return (0 < len(uid) <= MAX_USER_ID_LENGTH
            and all(c.isascii() and (c.isalnum() or c in "-_") for c in uid))


def sign_user_id(key: str, uid: str) -> str:
    """The user id cookie's value for ``uid``."""
    return f"{uid}.{signature(key, 'user-id', uid)}"


def verified_user_id(key: str, cookie: str | None) -> str | None:
    """The user id in a cookie value, or None if it is missing, malformed or forged."""
    if not cookie or not key:
        return None
    uid, _, sig = cookie.rpartition(".")
    if not valid_user_id(uid):
        return None
    return uid if hmac.compare_digest(sig, signature(key, "user-id", uid)) else None


def server_cookie(key: str, server_name: str) -> str:
    """HAProxy's persistence cookie value for a server: opaque without the key, and the
    same for the same name across reloads and restarts."""
    if not key:
        raise ValueError("the persistence cookie needs a key")
    return signature(key, "server", server_name, 20)
