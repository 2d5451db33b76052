"""Prometheus metrics of the app on ``GET /metrics``.

Requests by route and status, a latency histogram by route, (from prometheus-client's
process collector) ``process_cpu_seconds_total`` and ``process_resident_memory_bytes``
of the serving process, and ``instance_cpu_percent`` / ``instance_memory_percent``
of the instance (``APP_METRICS_SCOPE``: ``tree``, the gunicorn process tree, in a
local sandbox; ``host``, the whole machine, on a real one), which the monitor polls.
"""

from __future__ import annotations

import time

from flask import Blueprint, Flask, Response, current_app, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
)

from cdpipe_host.resource_usage import InstanceUsageCollector, ResourceUsage, default_root

EXTENSION = "cdpipe_metrics"


class AppMetrics:
    def __init__(self, scope: str = "tree") -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self.registry.register(InstanceUsageCollector(ResourceUsage(scope, default_root())))
        self.requests = Counter(
            "app_requests_total", "HTTP requests served, by route and status.",
            ["route", "status"], registry=self.registry,
        )
        self.latency = Histogram(
            "app_request_duration_seconds", "Time to serve a request, by route.",
            ["route"], registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )


bp = Blueprint("metrics", __name__)


def store() -> AppMetrics:
    return current_app.extensions[EXTENSION]  # type: ignore[no-any-return]


@bp.before_app_request
def _start_timer() -> None:
    g.cdpipe_started = time.perf_counter()


@bp.after_app_request
def _record(response: Response) -> Response:
    m = store()
    route = request.url_rule.rule if request.url_rule else "<unmatched>"
    m.requests.labels(route=route, status=str(response.status_code)).inc()
    started = g.get("cdpipe_started")
    if started is not None:
        m.latency.labels(route=route).observe(time.perf_counter() - started)
    return response


@bp.get("/metrics")
def metrics() -> Response:
    return Response(generate_latest(store().registry), mimetype=CONTENT_TYPE_LATEST)


def init_app(app: Flask) -> None:
    """One registry per app (a test's app does not count another's requests)."""
    app.extensions[EXTENSION] = AppMetrics(app.config["APP_METRICS_SCOPE"])
