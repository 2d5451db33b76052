"""Runs every benchmark against one throw-away local environment and prints figures."""

from __future__ import annotations

import platform
import time

from bench import (
    aws_calls,
    dashboard,
    deploy_times,
    fault_table,
    instance_size,
    machine_times,
    monitoring_bench,
    proxy_overhead,
    runtime_control,
    self_scaling,
    settle_times,
)
from bench.scratch_env import bench_env


def main() -> None:
    print(f"cdpipe benchmarks, {time.strftime('%Y-%m-%d')}, {platform.node()}, "
          f"{__import__('os').cpu_count()} cores")
    with bench_env() as env:
        baseline, steps = deploy_times.run(env)
        print(f"\n## Deploy times (wall clock; ansible -m ping of the 4 hosts: {baseline:.1f} s)")
        print(f"| {'step':<58} | seconds | x ping | goal |")
        print(f"|{'-' * 60}|---------|--------|------|")
        for what, took, goal in steps:
            ratio = took / baseline
            verdict = "ok" if ratio <= goal else "MISSED"
            print(f"| {what:<58} | {took:7.1f} | {ratio:6.1f} | <= {goal}x {verdict} |")

        print("\n## Requests to / (wrk, 12 connections, median of 5 alternated rounds of 5 s)")
        rows = proxy_overhead.run(env)
        base_rps, base_p99 = rows[1][1], rows[1][2]
        print(f"| {'target':<16} | req/s | range of rounds | p99 ms | req/s vs minimal "
              "| p99 vs minimal |")
        print(f"|{'-' * 18}|-------|-----------------|--------|------------------"
              "|----------------|")
        for name, rps, p99, low, high in rows:
            print(f"| {name:<16} | {rps:5.0f} | {low:6.0f} - {high:6.0f} | {p99:6.2f} "
                  f"| {rps / base_rps:16.3f} | {p99 / base_p99:14.3f} |")

        runtime_control.report(env)
        dashboard.report(env)
        monitoring_bench.report(env)
        settle_times.report(env)  # after monitoring_bench: the environment polls every 1 s
    fault_table.report()  # the fault suite, on its own environment (after this one is down)
    instance_size.report()  # a sandbox of its own, once the environment is down
    machine_times.report()  # its own environment, on the rig's machines
    aws_calls.main()  # moto on 127.0.0.1
    self_scaling.report()  # the self-scaling machine test, on a rig of its own


if __name__ == "__main__":
    main()
