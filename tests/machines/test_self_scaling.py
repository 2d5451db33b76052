"""Production that scales itself on the rig, with no laptop: the monitor on the proxy
machine runs the scaler (cdpipe on that machine, credentials from the instance profile,
its own SSH key) when prod's CPU stays above the rule, and again, to scale in, when it
falls below; the control machine's state file is gone for the whole test and its
cdpipe is not run. The breach's alert mail goes to a relay on the control machine's
bridge address that requires STARTTLS and a login, stopped while the alert fires.
First, Jenkins' post-build step, from a workspace with no ``.cdpipe``, deploys to the
running environment instead of creating a second one (before the monitor polls every
5 s: a deploy's CPU would then scale). The rules are the monitor's defaults; each
machine reads its own CPU, so idle machines read idle whatever runs beside the rig."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import redis
import requests

from cdpipe import PROJECT_ROOT
from cdpipe.secret_files import DEPLOY, LOCK
from cdpipe_host.keys import MONITOR_OUTBOX
from devkit.smtp_relay import SmtpRelay
from tests.e2e.load import Load
from tests.machines.conftest import MachinesEnv, monitor_rules
from tests.support import wait_until

# The monitor's default rules (roles/monitor/defaults, given as a rules file: the suite's
# environment has them without scaling), polled every 5 s instead of 90: prod-cpu above
# 40% for 3 polls scales out, below 5% for 3 polls scales in.
INTERVAL, FOR_POLLS = 5, 3
QUIET_POLLS = 12  # polls watched with nothing changing
# Every machine reads its own CPU (rig/proc_view.py): one busy loop holds the prod
# machine's one CPU near 100% (niced, so that its app still answers at once).
BURN = "nohup timeout 900 nice -n 19 sh -c 'while :; do :; done' >/dev/null 2>&1 &"


def ec2_client(env: MachinesEnv) -> Any:
    return boto3.client("ec2", endpoint_url=env.env["AWS_ENDPOINT_URL"],
                        region_name=env.env["AWS_REGION"],
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def autoscaled(env: MachinesEnv, environment: str) -> dict[str, str]:
    """Instance id -> state of the environment's autoscaled instances in moto (those
    terminated earlier too)."""
    pages = ec2_client(env).get_paginator("describe_instances").paginate(Filters=[
        {"Name": "tag:Environment", "Values": [environment]},
        {"Name": "tag:Autoscaled", "Values": ["true"]}])
    return {i["InstanceId"]: i["State"]["Name"] for page in pages
            for r in page["Reservations"] for i in r["Instances"]}


def private_address(env: MachinesEnv, instance_id: str) -> str:
    raw = ec2_client(env).describe_instances(InstanceIds=[instance_id])
    return str(raw["Reservations"][0]["Instances"][0]["PrivateIpAddress"])


def outbox_subjects(env: MachinesEnv, redis_host: str) -> list[str]:
    """Subjects of the mail waiting in the monitor's outbox (read as admin)."""
    password = (env.home / "secrets" / "redis_admin_password").read_text().strip()
    r = redis.Redis(host=redis_host, port=6379, username="admin", password=password,
                    decode_responses=True, socket_timeout=5)
    try:
        return [json.loads(raw)["subject"] for raw in r.lrange(MONITOR_OUTBOX, 0, -1)]
    finally:
        r.close()


def machine_calls(env: MachinesEnv) -> dict[str, int]:
    """The API requests the machines have sent to moto so far (the rig counts them)."""
    path = env.rig_dir / "forwarded.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def calls_between(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in after
            if after.get(k, 0) != before.get(k, 0)}


def scale_in_decisions(env: MachinesEnv, proxy_machine: str) -> int:
    """Scale-in decisions of the monitor since its last start with this test's interval
    (its log on the proxy machine: the start line, then one line per decision), or 0
    while a scale command runs (`sudo ... scaler/scale`, then `python -m cdpipe.cli
    scale`: its AWS calls are not over). The log is read before the processes: a
    decision logged in between has its command running by the time they are listed."""
    script = (f"/monitor: every {INTERVAL}s/ {{n = 0}} /scaling in:/ {{n++}} "
              "END {print n + 0}")
    out = env.ssh(proxy_machine, f"n=$(sudo awk '{script}' /var/log/supervisor/monitor.log); "
                                 "if pgrep -f 'cdpipe[.]cli scale|scaler/scal[e] ' >/dev/null; "
                                 "then echo 0; else echo \"$n\"; fi")
    return int(out.strip() or 0)


def settled_after_a_decision(env: MachinesEnv, proxy_machine: str) -> Callable[[], bool]:
    """True once two readings in a row (a second apart) see a decision and no command."""
    streak = [0]

    def check() -> bool:
        streak[0] = streak[0] + 1 if scale_in_decisions(env, proxy_machine) >= 1 else 0
        return streak[0] >= 2
    return check


def record(figures: dict[str, object]) -> None:
    """The figures for bench/self_scaling.py and the README (CDPIPE_SELF_SCALING_FIGURES)."""
    path = os.environ.get("CDPIPE_SELF_SCALING_FIGURES")
    if path:
        Path(path).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    print("self-scaling figures:", json.dumps(figures))


def test_the_post_build_step_from_a_fresh_workspace_deploys_to_the_running_environment(
        deployed: MachinesEnv, tmp_path: Path) -> None:
    """Jenkins' post-build step (`make pipeline`'s last stage) in a workspace with no
    `.cdpipe/`: the environment's id and the secrets a deploy reads come from the job's
    environment (credentials bindings), the rest from AWS tags."""
    before = deployed.status()
    environment = json.loads((deployed.home / "state.json").read_text())["environment"]
    fresh = tmp_path / "workspace-home"
    bindings = {f"CDPIPE_{name.upper()}": (deployed.home / "secrets" / name).read_text().strip()
                for name in DEPLOY + LOCK}
    env = deployed.env | bindings | {"CDPIPE_HOME": str(fresh),
                                     "CDPIPE_AWS_ENVIRONMENT": environment,
                                     "GIT_COMMIT": deployed.new}
    out = subprocess.run([str(PROJECT_ROOT / "scripts" / "post_build")], env=env,
                         capture_output=True, text=True, timeout=1800, check=False,
                         cwd=PROJECT_ROOT)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert f"post-build: deploying {deployed.new} to aws" in out.stdout
    assert "no state here: rebuilt environment" in out.stderr
    after = deployed.status()
    assert sorted(i["id"] for i in after["instances"]) == sorted(
        i["id"] for i in before["instances"])  # no second environment
    versions = {i["role"]: i["version"] for i in after["instances"]
                if i["role"] in ("prod", "canary")}
    assert versions == {"prod": deployed.new, "canary": deployed.new}
    assert sorted(p.name for p in (fresh / "secrets").iterdir()) == sorted(DEPLOY + LOCK)


def test_a_cpu_breach_scales_out_and_back_in_through_the_proxy_machine_alone(
        deployed: MachinesEnv, tmp_path: Path) -> None:
    prod_commit = deployed.status()["deployed"]["prod"]
    proxy = f"http://{deployed.address('proxy')}/"
    prod, redis_host = deployed.address("prod"), deployed.address("redis")
    proxy_machine = deployed.address("proxy")
    state = deployed.home / "state.json"
    environment = json.loads(state.read_text(encoding="utf-8"))["environment"]
    relay = SmtpRelay(tmp_path / "relay", host=deployed.rig.gateway)
    relay.start()
    mail = {"CDPIPE_SMTP_HOST": deployed.rig.gateway, "CDPIPE_SMTP_PORT": str(relay.port),
            "CDPIPE_SMTP_SECURITY": "starttls", "CDPIPE_SMTP_USER": relay.user,
            "CDPIPE_SMTP_PASSWORD": relay.password, "CDPIPE_SMTP_CA_FILE": str(relay.ca_file),
            "CDPIPE_MAIL_TO": "oncall@cdpipe.invalid"}
    deployed.cdpipe("up", "--ref", prod_commit, "--monitor-interval", str(INTERVAL),
                    "--scale-cooldown", "20", "--scale-max", "2", "--monitor-rules",
                    str(monitor_rules(tmp_path, scaling=True)), env=deployed.env | mail)
    # From here on the control machine is out of the picture: no state file, no cdpipe.
    away = tmp_path / "state.json.away"
    state.rename(away)
    try:
        earlier = autoscaled(deployed, environment)  # terminated by earlier tests
        assert set(earlier.values()) <= {"terminated"}, earlier
        # Nothing changes: the monitor polls without calling AWS. Its first scale-in
        # decision after the restart ("nothing to do": prod is at one instance) costs
        # one describe, after which that direction rests: let it pass first.
        wait_until(settled_after_a_decision(deployed, proxy_machine), INTERVAL * 24,
                   "the restarted monitor's first scale-in decision (nothing to do), "
                   "its scale command ended", interval=1)
        quiet_from = machine_calls(deployed)
        time.sleep(INTERVAL * QUIET_POLLS)
        quiet = calls_between(quiet_from, machine_calls(deployed))
        assert quiet.get("api", 0) == 0, quiet
        relay.stop()  # the relay is down while the alert fires
        with Load(proxy, threads=1, max_seconds=1500, pause=0.1) as load:
            burn_started = time.monotonic()
            calls_from = machine_calls(deployed)
            deployed.ssh(prod, BURN)
            try:
                wait_until(lambda: any("prod-cpu" in subject for subject
                                       in outbox_subjects(deployed, redis_host)), 300,
                           "the prod-cpu alert mail waiting in the outbox")
                relay.start()
                wait_until(lambda: any("FIRING prod-cpu" in subject
                                       for subject in relay.subjects()), 300,
                           "the alert mail at the relay once it is back")
                wait_until(lambda: bool(set(autoscaled(deployed, environment)) - set(earlier)),
                           600, "the monitor's scaler launching a prod instance")
                fresh = set(autoscaled(deployed, environment)) - set(earlier)
                assert len(fresh) == 1, fresh
                new = fresh.pop()
                launched = time.monotonic()
                wait_until(lambda: any(s.instance == new and s.status == 200
                                       for s in load.samples[-40:]), 900,
                           f"{new} serving through the proxy")
                serving = time.monotonic()
                scale_out_calls = calls_between(calls_from, machine_calls(deployed))
            finally:
                deployed.ssh(prod, "pkill -f 'while :; do :; done' || true", check=False)
            burn_stopped = time.monotonic()
            address = private_address(deployed, new)
            health = requests.get(f"http://{address}:8000/healthz", timeout=10).json()
            assert health["version"] == prod_commit
            wait_until(lambda: autoscaled(deployed, environment).get(new) == "terminated",
                       900, f"the monitor's scaler removing {new} once the CPU fell")
            removed = time.monotonic()
            last_served = max(s.finished for s in load.samples if s.instance == new)
        assert load.failures() == [], load.failures()[:5]
        assert len(load.samples) > 200
        assert not state.exists()  # nobody wrote the control machine's state meanwhile
        wait_until(lambda: any(subject.startswith("[cdpipe] SCALE IN")
                               for subject in relay.subjects()), 120,
                   "the scale-in mail at the relay")
        subjects = relay.subjects()
        assert any(subject.startswith("[cdpipe] SCALE OUT") for subject in subjects)
        assert all(m.login == relay.user for m in relay.messages)
        assert all(m.rcpt_tos == ["oncall@cdpipe.invalid"] for m in relay.messages)
    finally:
        relay.stop()
        if not state.exists():
            away.rename(state)  # the next tests' (the refresh corrects it from AWS)
    record({
        "breach_to_launch_s": round(launched - burn_started, 1),
        "breach_to_serving_s": round(serving - burn_started, 1),
        "breach_to_serving_net_of_polls_s": round(serving - burn_started
                                                  - INTERVAL * FOR_POLLS, 1),
        "load_gone_to_terminated_s": round(removed - burn_stopped, 1),
        "last_request_to_terminated_s": round(removed - last_served, 1),
        "aws_calls_per_quiet_poll": quiet.get("api", 0) / QUIET_POLLS,
        "quiet_polls": QUIET_POLLS,
        "aws_calls_scale_out": scale_out_calls.get("api", 0),
        "aws_calls_scale_out_by_action": {k.removeprefix("api:"): v
                                          for k, v in sorted(scale_out_calls.items())
                                          if k.startswith("api:")},
        "metadata_reads_scale_out": scale_out_calls.get("metadata", 0),
        "requests": len(load.samples),
        "failed_requests": len(load.failures()),
    })
