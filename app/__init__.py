"""The deployed web service: a Flask application factory served by gunicorn.

Configuration comes, in order, from defaults, the environment (``APP_*`` variables set
by the ``app`` role), the release's ``REVISION`` file, then ``test_config``. Logging is
the server's to configure (gunicorn, with the settings file the app role writes).
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from typing import Any

from flask import Flask

from app import flags, metrics, views

RELEASE_ROOT = Path(__file__).resolve().parent.parent


def _read_revision() -> str:
    """The commit this release was checked out at (written by the deploy), else 'dev'."""
    try:
        return (RELEASE_ROOT / "REVISION").read_text(encoding="utf-8").strip() or "dev"
    except OSError:
        return "dev"


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.from_mapping(
        APP_VERSION=os.environ.get("APP_VERSION") or _read_revision(),
        APP_INSTANCE_ID=os.environ.get("APP_INSTANCE_ID", "dev-1"),
        APP_ROLE=os.environ.get("APP_ROLE", "prod"),
        APP_REDIS_URL=os.environ.get("APP_REDIS_URL", ""),
        APP_REDIS_TIMEOUT=float(os.environ.get("APP_REDIS_TIMEOUT", "0.5")),
        APP_FLAGS_RESYNC_SECONDS=float(os.environ.get("APP_FLAGS_RESYNC_SECONDS", "5")),
        APP_METRICS_SCOPE=os.environ.get("APP_METRICS_SCOPE", "tree"),
        # The key of the signed user id cookie (the app role passes the environment's
        # secret; prod and canary share it, so a user keeps their id on both) and the
        # header of a trusted upstream that names the user ("" = none is trusted).
        APP_USER_ID_SECRET=os.environ.get("APP_USER_ID_SECRET", ""),
        APP_USER_ID_HEADER=os.environ.get("APP_USER_ID_HEADER", ""),
        # A local sandbox's declared size and control group (unset: the whole machine).
        APP_INSTANCE_VCPUS=os.environ.get("APP_INSTANCE_VCPUS", ""),
        APP_INSTANCE_MEMORY_MB=os.environ.get("APP_INSTANCE_MEMORY_MB", ""),
        APP_INSTANCE_CGROUP=os.environ.get("APP_INSTANCE_CGROUP", ""),
    )
    if test_config:
        app.config.from_mapping(test_config)
    if not app.config["APP_USER_ID_SECRET"]:
        # Development without the role: signed ids stay valid only in this process.
        logging.getLogger(__name__).warning(
            "APP_USER_ID_SECRET is not set; user id cookies are signed with a key of "
            "this process only")
        app.config["APP_USER_ID_SECRET"] = secrets.token_urlsafe(32)
    flags.init_app(app)
    metrics.init_app(app)
    app.register_blueprint(metrics.bp)
    app.register_blueprint(views.bp)
    return app
