"""A private git repository over SSH for the machines: sshd on the control machine's
address on the rig's network (never another address), accepting one deploy key whose
only command is git-shell, so the key can fetch and nothing else."""

from __future__ import annotations

import contextlib
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

from devkit import free_port
from rig.server import GATEWAY
from tests.support import wait_until


@contextlib.contextmanager
def private_git_server(work: Path, repo: Path) -> Iterator[tuple[str, Path]]:
    """Yields the repository's ssh:// URL and the deploy key's private file."""
    work.mkdir(parents=True, exist_ok=True)
    host_key, deploy_key = work / "host_key", work / "deploy_key"
    for key in (host_key, deploy_key):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                       check=True)
    public = (deploy_key.with_suffix(".pub")).read_text().strip()
    (work / "authorized_keys").write_text(
        f'restrict,command="git-shell -c \\"$SSH_ORIGINAL_COMMAND\\"" {public}\n')
    port = free_port()
    config = work / "sshd_config"
    config.write_text("\n".join([
        f"ListenAddress {GATEWAY}:{port}", f"HostKey {host_key}",
        f"PidFile {work / 'sshd.pid'}", f"AuthorizedKeysFile {work / 'authorized_keys'}",
        "PermitRootLogin forced-commands-only", "PasswordAuthentication no",
        "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no",
        "LogLevel VERBOSE"]) + "\n")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    log = (work / "sshd.log").open("wb")
    proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(config)],
                            stdout=log, stderr=log)

    def listening() -> bool:
        with socket.socket() as sock:
            return sock.connect_ex((GATEWAY, port)) == 0
    try:
        wait_until(listening, 20, f"the private git server on {GATEWAY}:{port}")
        yield f"ssh://root@{GATEWAY}:{port}{repo.resolve()}/.git", deploy_key
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
