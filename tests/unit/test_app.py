from __future__ import annotations

from flask.testing import FlaskClient

from app import create_app


def client(**config: object) -> FlaskClient:
    base = {"APP_REDIS_URL": "", "APP_VERSION": "abc123", "APP_INSTANCE_ID": "prod-7",
            "APP_ROLE": "prod", "TESTING": True}
    base.update(config)
    return create_app(base).test_client()


def test_index_reports_version_instance_and_role() -> None:
    body = client(APP_ROLE="canary").get("/").get_json()
    assert body == {"version": "abc123", "instance": "prod-7", "role": "canary"}


def test_healthz_answers_even_without_redis() -> None:
    resp = client().get("/healthz")
    assert resp.status_code == 200
    assert resp.get_json()["redis"] == "down"
    assert resp.get_json()["flags"] == "last known values"


def test_hiddenfeature_is_404_without_flag_store() -> None:
    assert client().get("/hiddenfeature").status_code == 404


def test_metrics_count_requests_by_route_and_status() -> None:
    c = client()
    c.get("/")
    c.get("/")
    c.get("/hiddenfeature")
    text = c.get("/metrics").get_data(as_text=True)
    assert 'app_requests_total{route="/",status="200"} 2.0' in text
    assert 'app_requests_total{route="/hiddenfeature",status="404"} 1.0' in text
    assert "app_request_duration_seconds_bucket" in text
    assert "process_resident_memory_bytes" in text
    assert "process_cpu_seconds_total" in text
