"""Secrets of an environment: generated once into files outside git, mode 0600.

``CDPIPE_REDIS_PASSWORD`` / ``CDPIPE_STATS_PASSWORD`` in the environment take precedence
(Jenkins credentials bindings set them); otherwise a random one is made and kept.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

NAMES = ("redis_password", "stats_password",
         # keys of the proxy's persistence cookie and of the app's signed user id cookie
         "proxy_cookie_key", "app_user_id_secret")


def ensure(secrets_dir: Path) -> dict[str, str]:
    secrets_dir.mkdir(parents=True, exist_ok=True)
    secrets_dir.chmod(0o700)
    values: dict[str, str] = {}
    for name in NAMES:
        path = secrets_dir / name
        given = os.environ.get(f"CDPIPE_{name.upper()}")
        if given:
            value = given
        elif path.exists():
            value = path.read_text(encoding="utf-8").strip()
        else:
            value = secrets.token_urlsafe(24)
        if not path.exists() or path.read_text(encoding="utf-8").strip() != value:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(value + "\n")
        path.chmod(0o600)  # also a file made earlier, or by hand, with looser bits
        values[name] = value
    return values


def read(secrets_dir: Path, name: str) -> str | None:
    path = secrets_dir / name
    return path.read_text(encoding="utf-8").strip() if path.exists() else None
