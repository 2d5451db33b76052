"""AWS API calls per `cdpipe status` and per refresh of an aws environment, counted by a
botocore event hook on every client cdpipe makes, against a moto server on 127.0.0.1
(no AWS account): a workspace with its state file, a fresh one (no .cdpipe/), and a
command that takes the lock after its refresh. Run: .venv/bin/python -m bench.aws_calls
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import requests

from cdpipe import cli
from cdpipe.config import Settings
from cdpipe.environment import Environment
from devkit.aws_calls import Calls
from devkit.ports import free_port

XENIAL = "ubuntu/images/hvm-ssd/ubuntu-xenial-16.04-amd64-server-*"  # one of moto's AMIs
PUBLIC_KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBu2F8QmUuC1PfIQYTlwDvDPVDSNWUZOsUnhrs"
              "tlTv3v bench\n")


@contextlib.contextmanager
def moto_server(timeout: float = 30) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H",
                             "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                requests.get(url + "/moto-api/", timeout=1)
                break
            except requests.RequestException:
                if time.monotonic() > deadline:
                    raise RuntimeError("moto server did not answer") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def status(home: Path) -> None:
    os.environ["CDPIPE_HOME"] = str(home)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            cli.main(["status", "--json"])
        except SystemExit as done:
            if done.code:
                raise RuntimeError(f"cdpipe status failed ({done.code})") from None


def locked_refresh(home: Path) -> None:
    env = Environment(Settings(home=home), show=lambda line: None)
    # moto's machines run no Redis: the environment lock (no AWS call) is left out.
    env._environment_lock = lambda command: contextlib.nullcontext()  # type: ignore[method-assign,assignment,return-value]
    with env.locked("deploy"):
        pass


def run() -> list[tuple[str, Counter[str]]]:
    with tempfile.TemporaryDirectory() as scratch, moto_server() as url:
        root = Path(scratch)
        (root / "key.pub").write_text(PUBLIC_KEY)
        os.environ.update({
            "AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench", "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1", "CDPIPE_PROVIDER": "aws",
            "CDPIPE_AWS_ENVIRONMENT": "bench", "CDPIPE_AWS_AMI_NAME_FILTER": XENIAL,
            "CDPIPE_AWS_ADMIN_CIDR": "203.0.113.7/32", "CDPIPE_AWS_SSH_WAIT_SECONDS": "0",
            "CDPIPE_AWS_PUBLIC_KEY_FILE": str(root / "key.pub"),
            "CDPIPE_AWS_ADDRESS": "private",
        })
        home = root / "laptop"
        env = Environment(Settings(home=home), show=lambda line: None)
        with env.locked("provision"):
            env.provision()
        calls = Calls()
        return [
            ("status, with a state file", calls.during(lambda: status(home))),
            ("status, fresh workspace (rebuilt from tags)",
             calls.during(lambda: status(root / "fresh"))),
            ("no-change refresh: Environment + locked()",
             calls.during(lambda: locked_refresh(home))),
        ]


def main() -> None:
    print("AWS API calls per status/refresh (moto on 127.0.0.1, 4 instances)")
    print(f"| {'what':<46} | calls | which |")
    print(f"|{'-' * 48}|-------|-------|")
    for what, counted in run():
        which = ", ".join(f"{name} x{n}" for name, n in counted.items())
        print(f"| {what:<46} | {sum(counted.values()):5} | {which} |")


if __name__ == "__main__":
    main()
