"""The local SMTP server: stores every message it receives in a Maildir.

Usage: ``python -m monitoring.mailsink --port P --maildir DIR [--host 127.0.0.1]``.
"""

from __future__ import annotations

import argparse
import logging
import mailbox
import signal
import sys
import threading
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

log = logging.getLogger("mailsink")


class MaildirHandler:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.maildir = mailbox.Maildir(str(path), create=True)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or envelope.content or b""
        key = self.maildir.add(content if isinstance(content, bytes) else content.encode())
        log.info("stored mail from %s to %s as %s", envelope.mail_from,
                 ", ".join(envelope.rcpt_tos), key)
        return "250 Message accepted for delivery"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--maildir", required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    controller = Controller(MaildirHandler(Path(args.maildir)), hostname=args.host,
                            port=args.port)
    controller.start()
    log.info("SMTP on %s:%d, Maildir %s", args.host, args.port, args.maildir)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    controller.stop()


if __name__ == "__main__":
    main()
