"""Metrics agent for instances without the app (redis, proxy): CPU and memory of the
instance on ``GET /metrics`` (Prometheus text), like the app's ``instance_*`` gauges.

Locally the instance is its sandbox, a machine of the declared size (``--vcpus``,
``--memory-mb``): its control group (``--cgroup``) when it runs in one, else the process
tree of its supervisor (the agent's parent). Usage: ``python -m cdpipe_host.metrics_agent
--port P [--host H] [--scope host] [--vcpus N --memory-mb M] [--cgroup NAME]``.
"""

from __future__ import annotations

import argparse
import os
import time
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily

from cdpipe_host.resource_usage import MIB, InstanceUsageCollector, ResourceUsage, Size


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
    parser.add_argument("--vcpus", type=float, default=None,
                        help="declared CPUs of the instance (tree scope); default: the host's")
    parser.add_argument("--memory-mb", type=int, default=None,
                        help="declared memory of the instance in MiB (with --vcpus)")
    parser.add_argument("--cgroup", default="", help="the sandbox's control group, if any")
    args = parser.parse_args()
    if (args.vcpus is None) != (args.memory_mb is None):
        parser.error("--vcpus and --memory-mb go together")
    size = Size(args.vcpus, args.memory_mb * MIB) if args.vcpus is not None else None
    registry = CollectorRegistry()
    registry.register(UsageCollector(ResourceUsage(args.scope, os.getppid(), size,
                                                   args.cgroup)))
    server: WSGIServer = make_server(args.host, args.port, make_wsgi_app(registry),
                                     handler_class=QuietHandler)
    server.serve_forever()


if __name__ == "__main__":
    main()
