"""Production that scales itself on the rig, with no laptop: the monitor on the proxy
machine runs the scaler (cdpipe on that machine, credentials from the instance profile,
its own SSH key) when prod's CPU stays above the rule, and again, to scale in, when it
falls below; the control machine's state file is gone for the whole test and its
cdpipe is not run."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import boto3

from tests.e2e.load import Load
from tests.machines.conftest import MachinesEnv
from tests.support import wait_until

RULES = """rules:
  - name: prod-cpu
    metric: cpu_percent
    role: prod
    upper: 70
    lower: 45
    for: 2
    scale: true
"""
INTERVAL, FOR_POLLS = 5, 2
# On the rig every machine reads the host's CPU: two busy loops on the prod machine
# (niced, so that the new machine's set-up is not starved) hold it near 100%.
BURN = ("nohup timeout 900 sh -c 'nice -n 19 yes >/dev/null & nice -n 19 yes >/dev/null "
        "& wait' >/dev/null 2>&1 &")


def ec2_client(env: MachinesEnv) -> Any:
    return boto3.client("ec2", endpoint_url=env.env["AWS_ENDPOINT_URL"],
                        region_name=env.env["AWS_REGION"],
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def autoscaled(env: MachinesEnv, environment: str) -> dict[str, str]:
    """Instance id -> state of the environment's autoscaled instances in moto."""
    pages = ec2_client(env).get_paginator("describe_instances").paginate(Filters=[
        {"Name": "tag:Environment", "Values": [environment]},
        {"Name": "tag:Autoscaled", "Values": ["true"]}])
    return {i["InstanceId"]: i["State"]["Name"] for page in pages
            for r in page["Reservations"] for i in r["Instances"]}


def private_address(env: MachinesEnv, instance_id: str) -> str:
    raw = ec2_client(env).describe_instances(InstanceIds=[instance_id])
    return str(raw["Reservations"][0]["Instances"][0]["PrivateIpAddress"])


def record(figures: dict[str, float]) -> None:
    """The figures for bench/self_scaling.py and the README (CDPIPE_SELF_SCALING_FIGURES)."""
    path = os.environ.get("CDPIPE_SELF_SCALING_FIGURES")
    if path:
        Path(path).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    print("self-scaling figures:", json.dumps(figures))


def test_a_cpu_breach_scales_out_and_back_in_through_the_proxy_machine_alone(
        deployed: MachinesEnv, tmp_path: Path) -> None:
    prod_commit = deployed.status()["deployed"]["prod"]
    state = deployed.home / "state.json"
    environment = json.loads(state.read_text(encoding="utf-8"))["environment"]
    rules = tmp_path / "rules.yml"
    rules.write_text(RULES, encoding="utf-8")
    deployed.cdpipe("up", "--ref", prod_commit, "--monitor-interval", str(INTERVAL),
                    "--scale-cooldown", "20", "--scale-max", "2",
                    "--monitor-rules", str(rules))
    # From here on the control machine is out of the picture: no state file, no cdpipe.
    state.rename(tmp_path / "state.json.away")
    proxy = f"http://{deployed.address('proxy')}/"
    prod = deployed.address("prod")
    assert autoscaled(deployed, environment) == {}
    with Load(proxy, threads=1, max_seconds=1500, pause=0.1) as load:
        burn_started = time.monotonic()
        deployed.ssh(prod, BURN)
        try:
            wait_until(lambda: len(autoscaled(deployed, environment)) == 1, 600,
                       "the monitor's scaler launching a prod instance")
            new = next(iter(autoscaled(deployed, environment)))
            launched = time.monotonic()
            wait_until(lambda: any(s.instance == new and s.status == 200
                                   for s in load.samples[-40:]), 900,
                       f"{new} serving through the proxy")
            serving = time.monotonic()
        finally:
            deployed.ssh(prod, "pkill -x yes || true", check=False)
        burn_stopped = time.monotonic()
        address = private_address(deployed, new)
        version = deployed.ssh(prod, f"curl -sf http://{address}:8000/healthz")
        assert json.loads(version)["version"] == prod_commit
        wait_until(lambda: autoscaled(deployed, environment).get(new) == "terminated", 900,
                   f"the monitor's scaler removing {new} once the CPU fell")
        removed = time.monotonic()
        last_served = max(s.finished for s in load.samples if s.instance == new)
    assert load.failures() == [], load.failures()[:5]
    assert len(load.samples) > 200
    assert not state.exists()  # nobody wrote the control machine's state meanwhile
    record({
        "breach_to_launch_s": round(launched - burn_started, 1),
        "breach_to_serving_s": round(serving - burn_started, 1),
        "breach_to_serving_net_of_polls_s": round(serving - burn_started
                                                  - INTERVAL * FOR_POLLS, 1),
        "load_gone_to_terminated_s": round(removed - burn_stopped, 1),
        "last_request_to_terminated_s": round(removed - last_served, 1),
        "requests": len(load.samples),
        "failed_requests": len(load.failures()),
    })
