"""The EC2 provider's wait for SSH (Ec2Provider.wait_for_ssh) against real TCP servers on
127.0.0.1 standing in for new machines: one whose sshd comes up late, one that accepts
and never says a word, one that answers something else. No SSH server is needed: the
wait only reads the banner."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cdpipe.config import Settings
from cdpipe.errors import CdpipeError
from cdpipe.model import Instance
from cdpipe.providers.aws.provider import Ec2Provider

BANNER = b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n"


def machine(instance_id: str) -> Instance:
    return Instance(id=instance_id, role="prod", host="127.0.0.1", ports={}, provider="aws")


class Server:
    """A TCP server on 127.0.0.1. The port is bound at once but refuses connections
    (no listen) for ``listen_after`` seconds, like a booting machine; then each
    connection gets ``answer`` after ``answer_after`` seconds (None: never a word)."""

    def __init__(self, listen_after: float = 0, answer: bytes | None = BANNER,
                 answer_after: float = 0) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.listen_after, self.answer, self.answer_after = listen_after, answer, answer_after
        self.connections = 0
        self.stopped = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        if self.stopped.wait(self.listen_after):
            return
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            if self.stopped.wait(self.answer_after) or self.answer is None:
                self.stopped.wait()  # hold the connection open, silent
                return
            conn.sendall(self.answer)
            self.stopped.wait(1)

    def stop(self) -> None:
        self.stopped.set()
        self.sock.close()


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        server.stop()


@pytest.fixture
def provider(tmp_path: Path) -> tuple[Ec2Provider, list[str]]:
    ec2 = Ec2Provider(Settings(home=tmp_path, aws_ssh_wait_seconds=300))
    lines: list[str] = []
    ec2.show = lines.append
    return ec2, lines


def test_waits_for_a_banner_that_comes_late(
        provider: tuple[Ec2Provider, list[str]], servers: list[Server]) -> None:
    ec2, lines = provider
    late = Server(listen_after=1.5, answer_after=0.5)
    servers.append(late)
    started = time.monotonic()
    ec2.wait_for_ssh([machine("i-0late")], port=late.port, timeout=20)
    took = time.monotonic() - started
    assert 2.0 <= took < 8, took  # refused for 1.5 s, then a banner 0.5 s after accept
    assert late.connections >= 1
    assert lines[0] == "waiting up to 20 s for SSH on i-0late at 127.0.0.1"
    assert lines[-1].startswith("i-0late at 127.0.0.1: SSH answers")


def test_fails_with_one_line_naming_the_silent_instance(
        provider: tuple[Ec2Provider, list[str]], servers: list[Server]) -> None:
    ec2, _lines = provider
    silent = Server(answer=None)
    servers.append(silent)
    started = time.monotonic()
    with pytest.raises(CdpipeError) as failure:
        ec2.wait_for_ssh([machine("i-0silent")], port=silent.port, timeout=2)
    took = time.monotonic() - started
    message = str(failure.value)
    assert message.startswith("i-0silent at 127.0.0.1: SSH did not answer within 2 s;")
    assert "\n" not in message and "CDPIPE_AWS_SSH_WAIT_SECONDS" in message
    assert 2 <= took < 4, took  # bounded: no probe outlives the deadline by much
    assert silent.connections >= 1  # it did connect; the banner never came


def test_only_an_ssh_banner_counts(
        provider: tuple[Ec2Provider, list[str]], servers: list[Server]) -> None:
    ec2, _lines = provider
    web = Server(answer=b"HTTP/1.1 400 Bad Request\r\n\r\n")
    servers.append(web)
    with pytest.raises(CdpipeError, match=r"^i-0web at 127\.0\.0\.1: SSH did not answer"):
        ec2.wait_for_ssh([machine("i-0web")], port=web.port, timeout=1)


def test_names_the_first_of_several_that_did_not_answer(
        provider: tuple[Ec2Provider, list[str]], servers: list[Server]) -> None:
    """One machine answers at once and is done; the others, refusing, are reported."""
    ec2, lines = provider
    ready = Server()
    servers.append(ready)
    ec2.wait_for_ssh([machine("i-0ready")], port=ready.port, timeout=5)
    refusing = socket.socket()  # bound, never listening: connection refused
    refusing.bind(("127.0.0.1", 0))
    try:
        with pytest.raises(CdpipeError, match=r"^i-0a at 127\.0\.0\.1: SSH did not answer "
                                              r"within 1 s \(nor did 1 more\);"):
            ec2.wait_for_ssh([machine("i-0a"), machine("i-0b")],
                             port=refusing.getsockname()[1], timeout=1)
    finally:
        refusing.close()
    assert any(line.startswith("i-0ready at 127.0.0.1: SSH answers") for line in lines)


def test_the_setting_bounds_the_wait_and_zero_turns_it_off(
        tmp_path: Path, servers: list[Server]) -> None:
    silent = Server(answer=None)
    servers.append(silent)
    bounded = Ec2Provider(Settings(home=tmp_path, aws_ssh_wait_seconds=1))
    bounded.show = lambda line: None
    with pytest.raises(CdpipeError, match="within 1 s"):
        bounded.wait_for_ssh([machine("i-0silent")], port=silent.port)
    off = Ec2Provider(Settings(home=tmp_path, aws_ssh_wait_seconds=0))
    before = silent.connections
    off.wait_for_ssh([machine("i-0silent")], port=silent.port)
    time.sleep(0.2)
    assert silent.connections == before  # not even a connection attempt
