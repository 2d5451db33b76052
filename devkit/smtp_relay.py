"""A throw-away SMTP relay for tests: aiosmtpd with TLS and AUTH required, on a given
address and port, with a certificate made for that address (a CA of its own, the
server's certificate with the address as an IP SAN), so a client that verifies the
certificate against ``ca_file`` and the host name gets through and any other does not.

    relay = SmtpRelay(workdir, host="172.31.0.1", port=2525)  # e.g. a podman bridge
    relay.start()            # STARTTLS required, then AUTH (user / password below)
    ...relay.ca_file, relay.messages...
    relay.stop(); relay.start()   # again on the same port, messages kept
    relay.stop()

``security="tls"`` serves TLS from the first byte (like port 465) instead of STARTTLS.
Certificates are made with the openssl command line (the ``cryptography`` package is not
a dependency of this project). ``python -m devkit.smtp_relay --host H --port P --dir D``
runs one in the foreground and prints each message's subject.
"""

from __future__ import annotations

import argparse
import ipaddress
import ssl
import subprocess
import threading
import time
import warnings
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any, Literal

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

DEFAULT_USER = "cdpipe-monitor"
DEFAULT_PASSWORD = "relay-secret-1"  # a test server's, not a secret


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True,
                   timeout=60)


def make_certificates(directory: Path, address: str, name: str = "cdpipe test CA"
                      ) -> tuple[Path, Path, Path]:
    """A CA and a server certificate it signed for ``address`` (an IP address: IP SAN;
    otherwise a DNS name), valid two days: (ca_file, cert_file, key_file)."""
    directory.mkdir(parents=True, exist_ok=True)
    try:
        san = f"IP:{ipaddress.ip_address(address)}"
    except ValueError:
        san = f"DNS:{address}"
    curve = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl("req", "-x509", *curve, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=directory)
    _openssl("req", *curve, "-keyout", "server.key", "-out", "server.csr",
             "-subj", f"/CN={address}", cwd=directory)
    (directory / "server.ext").write_text(
        f"subjectAltName={san}\nbasicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n",
        encoding="utf-8")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile",
             "server.ext", cwd=directory)
    for secret in ("ca.key", "server.key"):
        (directory / secret).chmod(0o600)
    return directory / "ca.pem", directory / "server.pem", directory / "server.key"


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    login: str | None
    content: bytes

    @property
    def message(self) -> Message:
        return message_from_bytes(self.content)

    @property
    def subject(self) -> str:
        return str(self.message["Subject"] or "")


@dataclass
class _Handler:
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or envelope.content or b""
        data = content if isinstance(content, bytes) else content.encode()
        user = session.auth_data if isinstance(session.auth_data, str) else None
        with self.lock:
            self.received.append(Received(str(envelope.mail_from), list(envelope.rcpt_tos),
                                          user, data))
        return "250 Message accepted for delivery"


class SmtpRelay:
    """An SMTP server that requires TLS (STARTTLS, or TLS from the start) and then a
    login; it keeps what it receives in ``messages`` across stop and start."""

    def __init__(self, directory: Path, host: str = "127.0.0.1", port: int = 0,
                 security: Literal["starttls", "tls"] = "starttls",
                 user: str = DEFAULT_USER, password: str = DEFAULT_PASSWORD) -> None:
        if port == 0:
            from devkit.ports import free_port
            port = free_port()
        self.host, self.port, self.security = host, port, security
        self.user, self.password = user, password
        self.ca_file, self.cert_file, self.key_file = make_certificates(directory, host)
        self.failed_logins = 0
        self._handler = _Handler()
        self._controller: Controller | None = None

    @property
    def messages(self) -> list[Received]:
        with self._handler.lock:
            return list(self._handler.received)

    def subjects(self) -> list[str]:
        return [m.subject for m in self.messages]

    def _authenticate(self, server: SMTP, session: Session, envelope: Envelope,
                      mechanism: str, auth_data: Any) -> AuthResult:
        ok = (isinstance(auth_data, LoginPassword) and auth_data.login == self.user.encode()
              and auth_data.password == self.password.encode())
        if not ok:
            self.failed_logins += 1
        return AuthResult(success=ok, handled=False,
                          auth_data=self.user if ok else None)

    def _context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context

    def start(self, timeout: float = 10.0) -> None:
        """Listens on ``host:port`` (again, after ``stop``)."""
        if self._controller is not None:
            return
        common: dict[str, Any] = {
            "hostname": self.host, "port": self.port, "ready_timeout": timeout,
            "authenticator": self._authenticate, "auth_required": True}
        if self.security == "tls":
            # TLS from the first byte (aiosmtpd's auth_require_tls only knows STARTTLS,
            # and warns that it is off).
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                controller = Controller(self._handler, ssl_context=self._context(),
                                        auth_require_tls=False, **common)
        else:
            controller = Controller(self._handler, tls_context=self._context(),
                                    require_starttls=True, auth_require_tls=True, **common)
        deadline = time.monotonic() + timeout
        while True:  # the port may still be held by the previous run for a moment
            try:
                controller.start()
                break
            except (OSError, RuntimeError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self._controller = controller

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> SmtpRelay:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", type=Path, required=True, help="where certificates go")
    parser.add_argument("--security", choices=["starttls", "tls"], default="starttls")
    args = parser.parse_args()
    relay = SmtpRelay(args.dir, args.host, args.port, args.security)
    relay.start()
    print(f"SMTP relay on {args.host}:{args.port} ({args.security}), login "
          f"{relay.user} / {relay.password}, CA {relay.ca_file}", flush=True)
    seen = 0
    try:
        while True:
            time.sleep(0.5)
            for m in relay.messages[seen:]:
                print(f"received: {m.subject}", flush=True)
            seen = len(relay.messages)
    except KeyboardInterrupt:
        relay.stop()


if __name__ == "__main__":
    main()
