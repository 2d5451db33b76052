"""The rig's one long-running process: moto, the network, a git server, the machines.

``serve`` owns everything the rig makes and removes all of it when it ends: on SIGTERM
(``rig down``), when its time is up (``--hours``, default 4), or when moto dies. Every
second it syncs moto's instances to machines (``rig.machines.sync``).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import boto3

from rig import machines
from rig.forward import Forwarder
from rig.image import ensure_image
from rig.podman import LABEL, podman, succeeds, unavailable
from rig.proc_view import ProcView

NETWORK = "cdpipe-rig"
SUBNET = "172.31.0.0/16"  # moto's default VPC: machines get exactly moto's addresses
GATEWAY = "172.31.0.1"  # the control machine, as the machines see it
REGION = "us-east-1"
# One of the AMIs moto knows; the machines are Debian whatever the AMI says.
AMI_NAME_FILTER = "ubuntu/images/hvm-ssd/ubuntu-xenial-16.04-amd64-server-*"
GIT_PORT = 9418
PROJECT_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class RigInfo:
    pid: int
    rig_id: str
    moto_url: str
    network: str
    gateway: str
    git_url: str
    # moto as the machines reach it: through the bridge's gateway (EC2 API and, standing
    # in for the instance metadata service, the credentials of an instance profile).
    machine_moto_url: str
    image: str
    subnet_id: str
    deadline: float

    @staticmethod
    def load(path: Path) -> RigInfo:
        return RigInfo(**json.loads(path.read_text(encoding="utf-8")))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_http(url: str, seconds: float) -> None:
    import urllib.request

    deadline = time.monotonic() + seconds
    while True:
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"rig: moto did not answer on {url}") from None
            time.sleep(0.1)


def _network_owner() -> str | None:
    out = podman("network", "inspect", NETWORK,
                 "--format", '{{index .Labels "' + LABEL + '"}}', check=False)
    return out.strip() or None


def _default_subnet(ec2: Any) -> str:
    """The first default subnet of moto's default VPC: instances launched in it get
    addresses inside SUBNET (launched with no subnet, moto picks any 10.x address)."""
    vpc = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"][0]
    subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]}])
    return str(min(subnets["Subnets"], key=lambda s: s["AvailabilityZone"])["SubnetId"])


def remove_leftovers(rig_id: str | None = None) -> None:
    """Machines and network of a rig (any rig when rig_id is None)."""
    selector = f"label={LABEL}={rig_id}" if rig_id else f"label={LABEL}"
    ids = podman("ps", "--all", "--quiet", "--filter", selector).split()
    if ids:
        podman("rm", "--force", "--time", "5", *ids, check=False)
    if succeeds("network", "exists", NETWORK) and (
            rig_id is None or _network_owner() in (rig_id, None)):
        podman("network", "rm", "--force", NETWORK, check=False)


def _rig_alive(rig_id: str) -> bool:
    """Whether a rig process of that id still runs (its command line names no id, so
    look for any `rig serve` other than this one holding the network's label)."""
    out = subprocess.run(["pgrep", "-f", "-a", "rig serve --dir"], capture_output=True,
                         text=True, check=False).stdout
    return any(int(line.split()[0]) != os.getpid() for line in out.splitlines() if line)


def _git_daemon(base: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["git", "daemon", "--export-all", "--reuseaddr", f"--base-path={base}",
         f"--listen={GATEWAY}", f"--port={GIT_PORT}", "--informative-errors", str(base)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _write_json(path: Path, data: object) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, path)


def _forward(port: int, say: Any) -> Forwarder | None:
    """moto's port on the gateway address, once the bridge has it (None until then)."""
    forward = Forwarder((GATEWAY, port), ("127.0.0.1", port))
    try:
        forward.start()
    except OSError as exc:
        say(f"rig: cannot forward {GATEWAY}:{port} to moto yet ({exc})")
        return None
    say(f"rig: moto answers the machines on {GATEWAY}:{port}")
    return forward


def serve(rig_dir: Path, hours: float, repo: Path = PROJECT_ROOT) -> int:
    reason = unavailable()
    if reason:
        print(f"rig: cannot run machines here: {reason}", file=sys.stderr)
        return 2
    rig_dir.mkdir(parents=True, exist_ok=True)
    info_file = rig_dir / "rig.json"
    log = rig_dir / "rig.log"
    out = log.open("a", encoding="utf-8")

    def say(text: str) -> None:
        out.write(f"{time.strftime('%H:%M:%S')} {text}\n")
        out.flush()

    rig_id = secrets.token_hex(3)
    view = ProcView(rig_dir / "lxcfs")
    names = machines.RigNames(rig_id=rig_id, network=NETWORK, subnet=SUBNET,
                              machine_options=tuple(view.podman_options()))
    stop = {"why": ""}

    def on_signal(signum: int, _frame: Any) -> None:
        stop["why"] = signal.Signals(signum).name

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    image = ensure_image(say)
    owner = _network_owner() if succeeds("network", "exists", NETWORK) else None
    if owner and _rig_alive(owner):
        print(f"rig: network {NETWORK} belongs to the running rig {owner}; run "
              "`make machines-down` first", file=sys.stderr)
        return 2
    if owner:
        remove_leftovers(owner)  # a rig that was killed left them
    podman("network", "rm", "--force", NETWORK, check=False)
    podman("network", "create", "--subnet", SUBNET, "--gateway", GATEWAY,
           "--label", f"{LABEL}={rig_id}", NETWORK)
    try:
        view.start()
    except RuntimeError as exc:
        remove_leftovers(rig_id)
        print(str(exc), file=sys.stderr)
        return 2
    say(f"rig {rig_id}: machines read their own CPU and memory (lxcfs on {view.mountpoint})")
    git: subprocess.Popen[bytes] | None = None
    moto: subprocess.Popen[bytes] | None = None
    forward: Forwarder | None = None
    try:
        port = _free_port()
        moto = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H",
                                 "127.0.0.1", "-p", str(port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        moto_url = f"http://127.0.0.1:{port}"
        git_base = rig_dir / "git"
        git_base.mkdir(exist_ok=True)
        link = git_base / "cdpipe.git"
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(repo / ".git")
        _wait_http(moto_url, 30)
        ec2 = boto3.client("ec2", region_name=REGION, endpoint_url=moto_url,
                           aws_access_key_id="testing", aws_secret_access_key="testing")
        deadline = time.time() + hours * 3600
        subnet_id = _default_subnet(ec2)
        info = RigInfo(pid=os.getpid(), rig_id=rig_id, moto_url=moto_url, network=NETWORK,
                       gateway=GATEWAY, git_url=f"git://{GATEWAY}/cdpipe.git",
                       machine_moto_url=f"http://{GATEWAY}:{port}", image=image,
                       subnet_id=subnet_id, deadline=deadline)
        tmp = info_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(info)), encoding="utf-8")
        os.replace(tmp, info_file)
        say(f"rig {rig_id}: moto on {moto_url}, machines on {NETWORK} ({SUBNET})")
        while not stop["why"]:
            if time.time() > deadline:
                stop["why"] = f"its {hours} h are up"
                break
            if moto.poll() is not None:
                stop["why"] = "moto exited"
                break
            if not view.running():
                stop["why"] = "lxcfs exited"
                break
            try:
                machines.sync(ec2, names, image, say)
            except Exception as exc:  # a bad pass is retried next second
                say(f"rig: sync failed, retrying: {exc}")
            # The bridge, and so the gateway address, exists once a machine does.
            if (git is None or git.poll() is not None) and machines.containers(names):
                git = _git_daemon(git_base)
            if (forward is None or not forward.running()) and machines.containers(names):
                forward = _forward(port, say)
            if forward is not None:
                _write_json(rig_dir / "forwarded.json", forward.requests)
            time.sleep(1)
        say(f"rig {rig_id}: stopping ({stop['why']})")
    finally:
        info_file.unlink(missing_ok=True)
        if forward is not None:
            forward.stop()
        for proc in (git, moto):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        remove_leftovers(rig_id)
        view.stop()
        say(f"rig {rig_id}: removed its machines and network")
    return 0
