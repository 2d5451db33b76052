"""The service's routes: identity, health and the flag-gated hidden feature."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify
from flask.typing import ResponseReturnValue

from app import flags

bp = Blueprint("main", __name__)


@bp.get("/")
def index() -> ResponseReturnValue:
    cfg = current_app.config
    return jsonify(
        version=cfg["APP_VERSION"], instance=cfg["APP_INSTANCE_ID"], role=cfg["APP_ROLE"]
    )


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    return jsonify(status="ok", version=current_app.config["APP_VERSION"],
                   redis="up" if flags.store().ping() else "down")


@bp.get("/hiddenfeature")
def hiddenfeature() -> ResponseReturnValue:
    if not flags.store().enabled("hiddenfeature"):
        return jsonify(error="not found"), 404
    return jsonify(feature="hidden", instance=current_app.config["APP_INSTANCE_ID"])
