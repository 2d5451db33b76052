"""Starting and stopping a rig from the outside (``rig up``/``rig down``), and the
environment variables that point cdpipe's AWS provider at it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from rig.machines import DEFAULT_USER
from rig.server import AMI_NAME_FILTER, GATEWAY, REGION, SUBNET, RigInfo

DEFAULT_DIR = Path(__file__).resolve().parent.parent / ".rig"


def ensure_key(rig_dir: Path) -> Path:
    key = rig_dir / "id_ed25519"
    if not key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "cdpipe-rig",
                        "-f", str(key)], check=True)
    return key


def aws_environment(rig_dir: Path, info: RigInfo) -> dict[str, str]:
    """What cdpipe needs to run its AWS path against this rig."""
    key = ensure_key(rig_dir)
    return {
        "CDPIPE_PROVIDER": "aws",
        "CDPIPE_HOME": str(rig_dir / "home"),
        "AWS_ENDPOINT_URL": info.moto_url,
        "AWS_ENDPOINT_URL_EC2": info.moto_url,  # boto3 prefers it over AWS_ENDPOINT_URL
        "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": "false",
        "NO_PROXY": f"127.0.0.1,localhost,{SUBNET}",
        "no_proxy": f"127.0.0.1,localhost,{SUBNET}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "CDPIPE_AWS_AMI_NAME_FILTER": AMI_NAME_FILTER,
        "CDPIPE_AWS_ADMIN_CIDR": f"{GATEWAY}/32",
        "CDPIPE_AWS_ADDRESS": "private",
        "CDPIPE_AWS_SSH_USER": DEFAULT_USER,
        "CDPIPE_AWS_PUBLIC_KEY_FILE": f"{key}.pub",
        "CDPIPE_AWS_PRIVATE_KEY_FILE": str(key),
        "CDPIPE_AWS_SUBNET_ID": info.subnet_id,
        "CDPIPE_APP_REPO": info.git_url,
        # cdpipe on the machines (the scaler on the proxy machine) reaches moto through
        # the gateway, and takes its credentials from moto's stand-in for the instance
        # metadata service, as an instance profile's on EC2.
        "CDPIPE_AWS_MACHINE_ENVIRONMENT": json.dumps({
            "AWS_ENDPOINT_URL": info.machine_moto_url,
            "AWS_ENDPOINT_URL_EC2": info.machine_moto_url,
            "AWS_EC2_METADATA_SERVICE_ENDPOINT": info.machine_moto_url + "/",
            "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": "false",
            "NO_PROXY": f"127.0.0.1,localhost,{SUBNET}",
            "no_proxy": f"127.0.0.1,localhost,{SUBNET}",
        }),
    }


def running(rig_dir: Path) -> RigInfo | None:
    path = rig_dir / "rig.json"
    if not path.exists():
        return None
    info = RigInfo.load(path)
    return info if _alive(info.pid) else None


def up(rig_dir: Path, hours: float, repo: Path | None = None, timeout: float = 900,
       show: Callable[[str], None] = print) -> RigInfo:
    """Starts a rig serving ``repo`` (default: this checkout) to its machines over git://;
    returns once moto answers (the first time, after the image is built)."""
    info = running(rig_dir)
    if info:
        return info
    rig_dir.mkdir(parents=True, exist_ok=True)
    ensure_key(rig_dir)
    err = (rig_dir / "serve.err").open("wb")
    command = [sys.executable, "-m", "rig", "serve", "--dir", str(rig_dir),
               "--hours", str(hours)]
    if repo is not None:
        command += ["--repo", str(repo)]
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL,
                            stdout=err, stderr=err, start_new_session=True,
                            cwd=Path(__file__).resolve().parent.parent)
    deadline = time.monotonic() + timeout
    shown = 0
    log = rig_dir / "rig.log"
    while True:
        if log.exists():
            lines = log.read_text(encoding="utf-8").splitlines()
            for line in lines[shown:]:
                show(line)
            shown = len(lines)
        info = running(rig_dir)
        if info:
            return info
        if proc.poll() is not None:
            tail = (rig_dir / "serve.err").read_text(errors="replace").strip().splitlines()
            raise RuntimeError(tail[-1] if tail else f"rig: serve exited {proc.returncode}")
        if time.monotonic() > deadline:
            proc.terminate()
            raise RuntimeError(f"rig: not ready within {timeout:.0f} s")
        time.sleep(0.5)


def down(rig_dir: Path, timeout: float = 120) -> bool:
    """Stops the rig (its process removes machines and network); False if none ran."""
    info = running(rig_dir)
    if info is None:
        return False
    os.kill(info.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(info.pid) and time.monotonic() < deadline:  # until all is removed
        time.sleep(0.5)
    return True


def _alive(pid: int) -> bool:
    """Whether the rig process runs (reaped first when this process started it, so a
    finished child does not linger as a zombie that looks alive)."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass  # not our child: started by another `rig up`
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
