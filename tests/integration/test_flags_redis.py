"""The app's flags against a real redis-server."""

from __future__ import annotations

import logging

import pytest
import redis

from app import create_app


@pytest.fixture
def setup(redis_server: tuple[int, str]):  # type: ignore[no-untyped-def]
    port, password = redis_server
    url = f"redis://:{password}@127.0.0.1:{port}/0"
    app = create_app({"APP_REDIS_URL": url, "TESTING": True})
    return app.test_client(), redis.Redis.from_url(url)


def test_hiddenfeature_follows_the_flag(setup) -> None:  # type: ignore[no-untyped-def]
    client, r = setup
    assert client.get("/hiddenfeature").status_code == 404
    r.set("flag:hiddenfeature", "on")
    assert client.get("/hiddenfeature").status_code == 200
    r.set("flag:hiddenfeature", "OFF")
    assert client.get("/hiddenfeature").status_code == 404
    assert client.get("/healthz").get_json()["redis"] == "up"


def test_invalid_value_is_off_and_logged_once(setup, caplog) -> None:  # type: ignore[no-untyped-def]
    client, r = setup
    r.set("flag:hiddenfeature", "maybe")
    with caplog.at_level(logging.WARNING):
        codes = {client.get("/hiddenfeature").status_code for _ in range(3)}
    assert codes == {404}
    lines = [rec for rec in caplog.records if "invalid value" in rec.getMessage()]
    assert len(lines) == 1
    assert "flag:hiddenfeature" in lines[0].getMessage() and "maybe" in lines[0].getMessage()


def test_wrong_password_means_flag_off_not_an_error(redis_server) -> None:  # type: ignore[no-untyped-def]
    port, _ = redis_server
    app = create_app({"APP_REDIS_URL": f"redis://:wrong@127.0.0.1:{port}/0", "TESTING": True})
    assert app.test_client().get("/hiddenfeature").status_code == 404
