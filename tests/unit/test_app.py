from __future__ import annotations

from flask import Flask
from flask.testing import FlaskClient


def test_index_reports_version_instance_and_role(app: Flask, client: FlaskClient) -> None:
    app.config["APP_ROLE"] = "canary"
    body = client.get("/").get_json()
    assert body == {"version": "abc123", "instance": "prod-7", "role": "canary"}


def test_healthz_answers_even_without_redis(client: FlaskClient) -> None:
    resp = client.get("/healthz")
    assert resp.status_code == 200
    assert resp.get_json()["redis"] == "down"
    assert resp.get_json()["flags"] == "last known values"


def test_hiddenfeature_is_404_without_flag_store(client: FlaskClient) -> None:
    assert client.get("/hiddenfeature").status_code == 404


def test_metrics_count_requests_by_route_and_status(client: FlaskClient) -> None:
    client.get("/")
    client.get("/")
    client.get("/hiddenfeature")
    text = client.get("/metrics").get_data(as_text=True)
    assert 'app_requests_total{route="/",status="200"} 2.0' in text
    assert 'app_requests_total{route="/hiddenfeature",status="404"} 1.0' in text
    assert "app_request_duration_seconds_bucket" in text
    assert "process_resident_memory_bytes" in text
    assert "process_cpu_seconds_total" in text


def test_each_app_counts_only_its_own_requests(app: Flask) -> None:
    from app import create_app

    other = create_app(dict(app.config))
    other.test_client().get("/")
    text = app.test_client().get("/metrics").get_data(as_text=True)
    assert 'route="/",status="200"' not in text
