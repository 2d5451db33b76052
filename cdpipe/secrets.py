"""Secrets of an environment: generated once into files outside git, mode 0600.

One password per Redis user (``redis_<user>_password``, see cdpipe.redis_users) and the
HAProxy stats page's (``stats_password``). ``CDPIPE_<NAME>`` in the environment takes
precedence (``CDPIPE_REDIS_OPERATOR_PASSWORD``, ``CDPIPE_STATS_PASSWORD``...; Jenkins'
credentials bindings set them) and is written through to the file; otherwise a random
one is made and kept. ``CDPIPE_REDIS_PASSWORD``, the one Redis password of earlier
versions, now sets the admin user's (``CDPIPE_REDIS_ADMIN_PASSWORD`` wins over it), and
a ``redis_password`` file left by an earlier version becomes the admin's file.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from cdpipe.redis_users import ADMIN, USERS, password_name

NAMES = (*(password_name(user) for user in USERS), "stats_password",
         # keys of the proxy's persistence cookie and of the app's signed user id cookie
         "proxy_cookie_key", "app_user_id_secret")
LEGACY_REDIS_PASSWORD = "redis_password"
LEGACY_VARIABLE = "CDPIPE_REDIS_PASSWORD"


def _given(name: str) -> str | None:
    given = os.environ.get(f"CDPIPE_{name.upper()}")
    if not given and name == password_name(ADMIN):
        given = os.environ.get(LEGACY_VARIABLE)
    return given or None


def _adopt_legacy(secrets_dir: Path) -> None:
    """The single password of earlier versions becomes the admin's (it could do
    everything): the running Redis keeps a password its operators know."""
    legacy, admin = secrets_dir / LEGACY_REDIS_PASSWORD, secrets_dir / password_name(ADMIN)
    if legacy.exists() and not admin.exists():
        os.replace(legacy, admin)


def _write(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(value + "\n")


def ensure(secrets_dir: Path) -> dict[str, str]:
    secrets_dir.mkdir(parents=True, exist_ok=True)
    secrets_dir.chmod(0o700)
    _adopt_legacy(secrets_dir)
    values: dict[str, str] = {}
    for name in NAMES:
        path = secrets_dir / name
        given = _given(name)
        if given:
            value = given
        elif path.exists():
            value = path.read_text(encoding="utf-8").strip()
        else:
            value = secrets.token_urlsafe(24)
        if not path.exists() or path.read_text(encoding="utf-8").strip() != value:
            _write(path, value)
        path.chmod(0o600)  # also a file made earlier, or by hand, with looser bits
        values[name] = value
    return values


def read(secrets_dir: Path, name: str) -> str | None:
    path = secrets_dir / name
    return path.read_text(encoding="utf-8").strip() if path.exists() else None
