"""Metrics agent for instances without the app (redis, proxy): CPU and memory of the
instance on ``GET /metrics`` (Prometheus text), like the app's ``instance_*`` gauges.

Locally the instance is its sandbox: the process tree of its supervisor (the agent's
parent). Usage: ``python -m cdpipe_host.metrics_agent --port P [--host H] [--scope host]``.
"""

from __future__ import annotations

import argparse
import os
import time
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily

from cdpipe_host.resource_usage import InstanceUsageCollector, ResourceUsage


class UsageCollector(InstanceUsageCollector):
    """The instance's gauges, and when the agent started."""

    def collect(self):  # type: ignore[no-untyped-def]
        yield from super().collect()
        yield GaugeMetricFamily("instance_agent_start_time_seconds", "When the agent started",
                                value=STARTED)


STARTED = time.time()


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--scope", choices=("tree", "host"), default="tree")
    args = parser.parse_args()
    registry = CollectorRegistry()
    registry.register(UsageCollector(ResourceUsage(args.scope, os.getppid())))
    server: WSGIServer = make_server(args.host, args.port, make_wsgi_app(registry),
                                     handler_class=QuietHandler)
    server.serve_forever()


if __name__ == "__main__":
    main()
