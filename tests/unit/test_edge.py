"""The edge's rules without servers: which routes are public, the signed user id, the
runtime directory of sockets, and HAProxy's own words when it refuses a file."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from app import create_app
from cdpipe import socket_dir
from cdpipe.ansible_runner import _message
from cdpipe.errors import CdpipeError
from cdpipe_host.edge import (
    PUBLIC_PATHS,
    USER_COOKIE,
    sign_user_id,
    verified_user_id,
)

# The app's routes that are not public: for the monitor and the operator, who reach
# instances directly.
PRIVATE_PATHS = {"/metrics", "/burn", "/healthz"}
KEY = "unit-test-secret"


def test_every_route_of_the_app_is_public_or_private(app: Flask) -> None:
    """A new route must be put on one side: the proxy forwards only PUBLIC_PATHS."""
    routes = {rule.rule for rule in app.url_map.iter_rules() if rule.endpoint != "static"}
    assert routes == set(PUBLIC_PATHS) | PRIVATE_PATHS
    assert not set(PUBLIC_PATHS) & PRIVATE_PATHS


# -- the user id ----------------------------------------------------------------------
@pytest.fixture
def signed_app() -> Flask:
    return create_app({"APP_REDIS_URL": "", "TESTING": True, "APP_USER_ID_SECRET": KEY})


def test_a_first_visit_gets_a_signed_id_that_stays(signed_app: Flask) -> None:
    client = signed_app.test_client()
    first = client.get("/greeting")
    cookie = client.get_cookie(USER_COOKIE)
    assert cookie is not None
    uid = first.get_json()["user"]
    assert verified_user_id(KEY, cookie.value) == uid
    again = client.get("/greeting")
    assert again.get_json()["user"] == uid
    assert "Set-Cookie" not in again.headers  # a valid cookie is not set again


@pytest.mark.parametrize("forged", ["alice", "alice.", "alice.0123abcd",
                                    sign_user_id("another-key", "alice"),
                                    sign_user_id(KEY, "alice")[:-1] + "0",
                                    "al\u00efce." + "0" * 32])
def test_a_forged_or_unsigned_cookie_gets_a_fresh_id(signed_app: Flask, forged: str) -> None:
    client = signed_app.test_client()
    client.set_cookie(USER_COOKIE, forged)
    body = client.get("/greeting").get_json()
    assert body["user"] != "alice"
    cookie = client.get_cookie(USER_COOKIE)
    assert cookie is not None and verified_user_id(KEY, cookie.value) == body["user"]


def test_a_signed_cookie_names_its_user(signed_app: Flask) -> None:
    client = signed_app.test_client()
    client.set_cookie(USER_COOKIE, sign_user_id(KEY, "alice"))
    assert client.get("/greeting").get_json()["user"] == "alice"


def test_the_user_header_is_ignored_unless_trusted(signed_app: Flask) -> None:
    body = signed_app.test_client().get("/greeting", headers={"X-User-Id": "alice"}).get_json()
    assert body["user"] != "alice"
    signed_app.config["APP_USER_ID_HEADER"] = "X-Authenticated-User"
    client = signed_app.test_client()
    assert client.get("/greeting", headers={"X-User-Id": "alice"}).get_json()["user"] != "alice"
    trusted = client.get("/greeting", headers={"X-Authenticated-User": "alice"}).get_json()
    assert trusted["user"] == "alice"
    # A value no user id can be falls back to the cookie.
    odd = client.get("/greeting", headers={"X-Authenticated-User": "a b"}).get_json()
    assert odd["user"] != "a b"


def test_without_a_secret_ids_are_still_signed() -> None:
    """Development without the role: a key of this process, never an empty one."""
    app = create_app({"APP_REDIS_URL": "", "TESTING": True})
    assert app.config["APP_USER_ID_SECRET"]
    assert verified_user_id("", sign_user_id("", "alice")) is None


# -- the runtime directory ------------------------------------------------------------
def test_runtime_dir_is_short_stable_and_per_home(tmp_path: Path) -> None:
    long_home = tmp_path / ("x" * 200) / ".cdpipe"
    path = socket_dir.default_for(long_home)
    assert path == socket_dir.default_for(long_home)
    assert path != socket_dir.default_for(tmp_path / "other")
    assert len(str(path / socket_dir.LONGEST_SOCKET)) <= socket_dir.SUN_PATH_MAX
    assert str(os.getuid()) in path.name


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A folder short enough for socket paths under it (pytest's own tmp_path is longer
    under a pytest-xdist worker)."""
    path = Path(tempfile.mkdtemp(prefix="cdpipe-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_runtime_dir_is_made_private(short_tmp: Path) -> None:
    path = socket_dir.ensure(short_tmp / "run")
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    path.chmod(0o755)
    socket_dir.ensure(path)  # an existing one of ours is made private again
    assert stat.S_IMODE(path.stat().st_mode) == 0o700


def test_runtime_dir_refuses_what_is_not_its_own(short_tmp: Path) -> None:
    (short_tmp / "target").mkdir()
    (short_tmp / "link").symlink_to(short_tmp / "target")
    with pytest.raises(CdpipeError, match="is not a directory of user"):
        socket_dir.ensure(short_tmp / "link")
    with pytest.raises(CdpipeError, match="too long for UNIX sockets"):
        socket_dir.ensure(short_tmp / ("y" * 120))


# -- HAProxy's own words ----------------------------------------------------------------
def test_a_refused_template_shows_the_checkers_message() -> None:
    result = {"msg": "failed to validate", "exit_status": 1, "stdout": "",
              "stderr": "[NOTICE]   (1) : haproxy version is 2.6.12\n"
                        "[NOTICE]   (1) : path to executable is /usr/sbin/haproxy\n"
                        "[ALERT]    (1) : config : parsing [/tmp/x:10] : unknown keyword "
                        "'bogus' in 'frontend' section\n"}
    line = _message(result)
    assert line.startswith("failed to validate: [ALERT]")
    assert "unknown keyword 'bogus' in 'frontend' section" in line
    assert "NOTICE" not in line
