"""The service's routes: identity, health and the flag-gated features."""

from __future__ import annotations

import time
import uuid

from flask import Blueprint, Response, current_app, g, jsonify, request
from flask.typing import ResponseReturnValue

from app import flags
from cdpipe_host.edge import USER_COOKIE, sign_user_id, valid_user_id, verified_user_id

bp = Blueprint("main", __name__)


def user_id() -> str:
    """Who the user is, for percentage rollouts, from what a client cannot choose: the
    header of a trusted upstream (``APP_USER_ID_HEADER``, only when configured), else
    our signed cookie; a missing, forged or unsigned cookie gets a fresh id (set once)."""
    cfg = current_app.config
    header = cfg["APP_USER_ID_HEADER"]
    if header:
        given = request.headers.get(header, "")
        if valid_user_id(given):
            return given
    uid = verified_user_id(cfg["APP_USER_ID_SECRET"], request.cookies.get(USER_COOKIE))
    if uid is None:
        uid = g.new_user_id = uuid.uuid4().hex
    return uid


@bp.after_app_request
def remember_user(response: Response) -> Response:
    new_id = g.get("new_user_id")
    if new_id:
        response.set_cookie(USER_COOKIE, sign_user_id(current_app.config["APP_USER_ID_SECRET"],
                                                      new_id),
                            max_age=365 * 24 * 3600, httponly=True, samesite="Lax")
    return response


@bp.get("/")
def index() -> ResponseReturnValue:
    cfg = current_app.config
    return jsonify(
        version=cfg["APP_VERSION"], instance=cfg["APP_INSTANCE_ID"], role=cfg["APP_ROLE"]
    )


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    # Healthy while the process serves: a Redis outage is reported, not a failure.
    return jsonify(status="ok", version=current_app.config["APP_VERSION"],
                   **flags.store().health())


@bp.get("/hiddenfeature")
def hiddenfeature() -> ResponseReturnValue:
    if not flags.store().enabled("hiddenfeature", user_id()):
        return jsonify(error="not found"), 404
    return jsonify(feature="hidden", instance=current_app.config["APP_INSTANCE_ID"])


@bp.get("/greeting")
def greeting() -> ResponseReturnValue:
    """A percentage rollout: ``flag:new-greeting`` at N% gives N% of users the new text."""
    uid = user_id()
    if flags.store().enabled("new-greeting", uid):
        return jsonify(greeting="Welcome back! Here is what is new.", variant="new", user=uid)
    return jsonify(greeting="Hello.", variant="classic", user=uid)


@bp.get("/burn")
def burn() -> ResponseReturnValue:
    """Burns CPU for ``ms`` milliseconds (default 200, at most 2000): a load test of
    monitoring and autoscaling, behind ``flag:cpuburn`` (off unless set)."""
    if not flags.store().enabled("cpuburn", user_id()):
        return jsonify(error="not found"), 404
    ms = min(2000, max(1, request.args.get("ms", 200, type=int)))
    deadline = time.perf_counter() + ms / 1000
    spins = 0
    while time.perf_counter() < deadline:
        spins += 1
    return jsonify(burned_ms=ms, spins=spins, instance=current_app.config["APP_INSTANCE_ID"])
