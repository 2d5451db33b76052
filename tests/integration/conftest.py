"""One moto server per test process (a pytest-xdist worker, or the whole run), reset
between tests through its own API (``POST /moto-api/reset``) instead of a new server
for each test: every EC2 and IAM test still starts from an empty account."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from devkit import free_port
from tests.support import wait_until

BIN = Path(sys.executable).parent
XENIAL = "ubuntu/images/hvm-ssd/ubuntu-xenial-16.04-amd64-server-*"  # one of moto's AMIs
TEST_PUBLIC_KEY = ("ssh-ed25519 "
                   "AAAAC3NzaC1lZDI1NTE5AAAAIBu2F8QmUuC1PfIQYTlwDvDPVDSNWUZOsUnhrstlTv3v test\n")


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """A moto server on a free loopback port for the session; stopped after."""
    port = free_port()
    proc = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            requests.get(url + "/moto-api/", timeout=1)  # any HTTP answer: it listens
            return True
        except requests.RequestException:
            return False
    try:
        wait_until(answers, 30, "the moto server answering /moto-api/", interval=0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def moto(moto_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The session's moto server as a new account (every backend reset, IAM enforcement
    off), and the environment of a cdpipe checkout pointed at it: the test's own
    CDPIPE_HOME, moto's credentials and region, and the wait for SSH off (moto's
    addresses are not on this machine)."""
    requests.post(f"{moto_server}/moto-api/reset", timeout=30).raise_for_status()
    requests.post(f"{moto_server}/moto-api/reset-auth", data=b"inf",
                  timeout=5).raise_for_status()
    key = tmp_path / "id_test.pub"
    key.write_text(TEST_PUBLIC_KEY)
    for name, value in {
        "AWS_ENDPOINT_URL": moto_server, "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1", "CDPIPE_HOME": str(tmp_path / "home"),
        "CDPIPE_AWS_AMI_NAME_FILTER": XENIAL, "CDPIPE_AWS_ADMIN_CIDR": "203.0.113.7/32",
        "CDPIPE_AWS_PUBLIC_KEY_FILE": str(key), "CDPIPE_AWS_SSH_WAIT_SECONDS": "0",
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("CDPIPE_AWS_ENVIRONMENT", "CDPIPE_AWS_REGION", "CDPIPE_AWS_ADDRESS",
                 "CDPIPE_AWS_KEY_NAME", "CDPIPE_AWS_SUBNET_ID", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return moto_server
