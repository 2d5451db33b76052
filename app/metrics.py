"""Prometheus metrics of the app on ``GET /metrics``.

Requests by route and status, a latency histogram by route (buckets dense enough that
the canary judge's interpolated p95 sees a change of 50 ms), the release it serves
(``app_release_info{commit}``: a new release starts a new judging window), (from
prometheus-client's
process collector) ``process_cpu_seconds_total`` and ``process_resident_memory_bytes``
of the serving process, and ``instance_cpu_percent`` / ``instance_memory_percent``
of the instance (``APP_METRICS_SCOPE``: ``host``, the whole machine, on a real one;
``tree``, a local sandbox: its control group ``APP_INSTANCE_CGROUP`` when it runs in one,
else the gunicorn process tree, as percentages of the declared size
``APP_INSTANCE_VCPUS`` / ``APP_INSTANCE_MEMORY_MB``), which the monitor polls.
"""

from __future__ import annotations

import os
import time

from flask import Blueprint, Flask, Response, current_app, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from cdpipe_host.resource_usage import (
    MIB,
    InstanceUsageCollector,
    ResourceUsage,
    Size,
    default_root,
)

EXTENSION = "cdpipe_metrics"


# Seconds: every 25 ms up to 300 ms, then wider (Prometheus' histogram_quantile
# interpolates within a bucket, so its error is at most the bucket's width).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.125, 0.15, 0.175, 0.2, 0.225,
                   0.25, 0.275, 0.3, 0.35, 0.4, 0.5, 0.6, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0)


# gunicorn with more than one worker sets this (the app role): each worker then writes
# its counts to files there, and /metrics adds up every worker's (prometheus-client's
# multiprocess mode); without it /metrics would answer one worker's counts at random.
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"


class AppMetrics:
    def __init__(self, scope: str = "tree", size: Size | None = None, cgroup: str = "",
                 commit: str = "dev") -> None:
        self.registry = CollectorRegistry()  # the app's own metrics are made in it
        # What /metrics exposes: the app's metrics (every worker's, added up, in
        # multiprocess mode), the instance's CPU and memory, and (one process only)
        # the serving process's.
        self.exposed = self.registry
        if os.environ.get(MULTIPROCESS_DIR):
            self.exposed = CollectorRegistry()
            MultiProcessCollector(self.exposed)
        else:
            ProcessCollector(registry=self.registry)
        self.exposed.register(InstanceUsageCollector(
            ResourceUsage(scope, default_root(), size, cgroup)))
        self.requests = Counter(
            "app_requests_total", "HTTP requests served, by route and status.",
            ["route", "status"], registry=self.registry,
        )
        self.latency = Histogram(
            "app_request_duration_seconds", "Time to serve a request, by route.",
            ["route"], registry=self.registry,
            buckets=LATENCY_BUCKETS,
        )
        # A gauge, not an Info: multiprocess mode adds up gauges, and has no Info.
        self.release = Gauge("app_release_info", "The release this app serves.",
                             ["commit"], registry=self.registry, multiprocess_mode="max")
        self.release.labels(commit=commit).set(1)


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
    return Response(generate_latest(store().exposed), mimetype=CONTENT_TYPE_LATEST)


def init_app(app: Flask) -> None:
    """One registry per app (a test's app does not count another's requests)."""
    vcpus, memory_mb = app.config["APP_INSTANCE_VCPUS"], app.config["APP_INSTANCE_MEMORY_MB"]
    size = Size(float(vcpus), int(memory_mb) * MIB) if vcpus and memory_mb else None
    app.extensions[EXTENSION] = AppMetrics(app.config["APP_METRICS_SCOPE"], size,
                                           app.config["APP_INSTANCE_CGROUP"],
                                           app.config["APP_VERSION"])
