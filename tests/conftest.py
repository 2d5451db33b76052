"""Shared fixtures: real servers on loopback ports, stopped after each test."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from app import create_app
from devkit import free_port
from tests.xdist_groups import check_groups, make_scheduler

# What the tests themselves read from the caller's environment; every other AWS_* and
# CDPIPE_* variable is dropped for the session (pytest_configure).
TEST_CONTROLS = {"CDPIPE_REQUIRE_MACHINES", "CDPIPE_MACHINES_REUSE",
                 "CDPIPE_SELF_SCALING_FIGURES", "CDPIPE_DASHBOARD_SCREENSHOT"}


def pytest_configure(config: pytest.Config) -> None:
    """Tests run on the local provider (and the machine suite on its own rig) whatever
    the caller exported: a sourced `.rig/env.sh` or a Jenkins agent's AWS credentials
    must never send `cdpipe up`/`down` of the end-to-end tests to AWS."""
    for name in list(os.environ):
        if name.startswith(("AWS_", "CDPIPE_")) and name not in TEST_CONTROLS:
            del os.environ[name]


# How pytest-xdist's two workers share the local suites (scripts/run_tests): the tests of
# a whole local environment stay in one worker, so each environment is brought up once
# per run while the other worker runs the rest; every other module is one unit (its
# module-scoped fixtures, a browser or an ACL'd Redis, are made once).
pytest_xdist_make_scheduler = make_scheduler


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    check_groups(items)


TEST_APP_CONFIG = {"APP_REDIS_URL": "", "APP_VERSION": "abc123", "APP_INSTANCE_ID": "prod-7",
                   "APP_ROLE": "prod", "TESTING": True}


@pytest.fixture
def app() -> Flask:
    """The app as the Flask tutorial tests it: test configuration, no Redis."""
    return create_app(dict(TEST_APP_CONFIG))


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[tuple[int, str]]:
    """A real redis-server with a password on a free loopback port; stopped after."""
    port, password = free_port(), "test-password"
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--requirepass", password,
         "--save", "", "--appendonly", "no", "--dir", str(tmp_path),
         "--notify-keyspace-events", "KA"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.05)
    yield port, password
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def r(redis_server: tuple[int, str]) -> Iterator[redis.Redis]:
    """A client of ``redis_server`` (strings decoded), closed after."""
    port, password = redis_server
    client = redis.Redis(port=port, password=password, decode_responses=True)
    yield client
    client.close()
