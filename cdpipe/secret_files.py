"""Secrets of an environment: generated once into files outside git, mode 0600.

One password per Redis user (``redis_<user>_password``, see cdpipe.redis_users) and the
HAProxy stats page's (``stats_password``). ``CDPIPE_<NAME>`` in the environment takes
precedence (``CDPIPE_REDIS_OPERATOR_PASSWORD``, ``CDPIPE_STATS_PASSWORD``...; Jenkins'
credentials bindings set them) and is written through to the file; otherwise a random
one is made and kept. ``CDPIPE_REDIS_PASSWORD``, the one Redis password of earlier
versions, now sets the admin user's (``CDPIPE_REDIS_ADMIN_PASSWORD`` wins over it), and
a ``redis_password`` file left by an earlier version becomes the admin's file.

Secrets are generated (``ensure``) only for an environment being created: one that
already runs (its Redis holds the ACL of its passwords) is given the ones a command
reads (``require``), from files or ``CDPIPE_<NAME>`` variables, never new ones. What
each command reads: ``DEPLOY`` (deploy.yml and scale.yml render the app's config: its
Redis URL and its cookie key), ``SCALE_IN`` (the deployer's Redis password to take the
server out of ``servers:prod``, the stats page's to watch it drain), ``ALL`` (site.yml
configures every role). A secrets directory that holds only some files serves the
commands that need only those.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable
from pathlib import Path

from cdpipe.errors import CdpipeError
from cdpipe.redis_users import ADMIN, APP, DEPLOYER, USERS, password_name

NAMES = (*(password_name(user) for user in USERS), "stats_password",
         # keys of the proxy's persistence cookie and of the app's signed user id cookie
         "proxy_cookie_key", "app_user_id_secret")
# What each command reads (see the module's docstring).
DEPLOY = (password_name(APP), "app_user_id_secret")
# What takes the environment lock (cdpipe.env_lock): every state-changing command.
LOCK = (password_name(DEPLOYER),)
SCALE_IN = (password_name(DEPLOYER), "stats_password")
ALL = NAMES
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


def _open(secrets_dir: Path) -> None:
    secrets_dir.mkdir(parents=True, exist_ok=True)
    secrets_dir.chmod(0o700)
    _adopt_legacy(secrets_dir)


def ensure(secrets_dir: Path) -> dict[str, str]:
    """Every secret, a missing one generated: for an environment being created."""
    _open(secrets_dir)
    return {name: _keep(secrets_dir, name, secrets.token_urlsafe(24)) for name in NAMES}


def require(secrets_dir: Path, names: Iterable[str]) -> dict[str, str]:
    """The secrets ``names`` of an environment that exists, from ``CDPIPE_<NAME>``
    (written through to the file) or the file; never generated. The first missing one
    is a one-line error naming its file and its variable. Other files may be missing."""
    _open(secrets_dir)
    for name in names:
        if not _given(name) and not (secrets_dir / name).exists():
            raise CdpipeError(
                f"secret {name} is missing, and this environment exists (cdpipe makes "
                f"secrets only for a new one): put it in {secrets_dir / name} or set "
                f"CDPIPE_{name.upper()} (Jenkins: a credentials binding)")
    return {name: _keep(secrets_dir, name, None) for name in names}


def _keep(secrets_dir: Path, name: str, new: str | None) -> str:
    """The secret's value (the variable's, else the file's, else ``new``), in its
    file, mode 0600."""
    path = secrets_dir / name
    given = _given(name)
    if given:
        value = given
    elif path.exists():
        value = path.read_text(encoding="utf-8").strip()
    elif new is not None:
        value = new
    else:  # require() checked it
        raise CdpipeError(f"secret {name} is missing")
    if not path.exists() or path.read_text(encoding="utf-8").strip() != value:
        _write(path, value)
    path.chmod(0o600)  # also a file made earlier, or by hand, with looser bits
    return value


def read(secrets_dir: Path, name: str) -> str | None:
    path = secrets_dir / name
    return path.read_text(encoding="utf-8").strip() if path.exists() else None
