"""Alert mail: an outbox in Redis, delivered over SMTP and retried with backoff.

A message is queued in the same Redis transaction as the alert transition that caused
it, so a crash between the two neither loses nor doubles it; a message that cannot be
sent stays queued (surviving restarts) until it is sent.
"""

from __future__ import annotations

import json
import logging
import smtplib
import time
import uuid
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

import redis

from cdpipe_host.keys import MONITOR_OUTBOX
from cdpipe_host.values import text
from monitoring.config import Smtp

log = logging.getLogger("monitor.mail")
OUTBOX = MONITOR_OUTBOX
MAX_BACKOFF_SECONDS = 300.0


def message(subject: str, body: str) -> str:
    return json.dumps({"id": uuid.uuid4().hex, "subject": subject, "body": body,
                       "attempts": 0, "next_try": 0.0, "queued": time.time()})


def send(smtp: Smtp, subject: str, body: str, message_id: str) -> None:
    msg = EmailMessage()
    msg["From"] = smtp.sender
    msg["To"] = ", ".join(smtp.recipients)
    msg["Subject"] = subject
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(idstring=message_id, domain="cdpipe")
    msg.set_content(body)
    with smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout_seconds) as client:
        if smtp.starttls:
            client.starttls()
        if smtp.user and smtp.password:
            client.login(smtp.user, smtp.password)
        client.send_message(msg)


def deliver_due(r: redis.Redis, smtp: Smtp, now: float | None = None) -> int:
    """Sends every queued message that is due; returns how many were sent."""
    now = time.time() if now is None else now
    sent = 0
    for raw in r.lrange(OUTBOX, 0, -1):
        item = json.loads(raw)
        # Not due yet; a next try further away than the longest backoff means the wall
        # clock stepped back since it was set: due now, not that much later.
        if now < item["next_try"] <= now + MAX_BACKOFF_SECONDS:
            continue
        try:
            send(smtp, item["subject"], item["body"], item["id"])
        except (OSError, smtplib.SMTPException) as exc:
            item["attempts"] += 1
            delay = min(MAX_BACKOFF_SECONDS, 2.0 ** item["attempts"])
            item["next_try"] = now + delay
            # One transaction: Redis out of memory allows the LREM but refuses the LPUSH,
            # which alone would lose the mail; queued together, neither happens.
            pipe = r.pipeline(transaction=True)
            pipe.lrem(OUTBOX, 1, str(text(raw)))
            pipe.lpush(OUTBOX, json.dumps(item))
            pipe.execute()
            log.warning("mail %r not sent (%s); retry %d in %.0fs", item["subject"], exc,
                        item["attempts"], delay)
            break  # the server is down: the rest waits for the next round
        r.lrem(OUTBOX, 1, str(text(raw)))
        sent += 1
        log.info("mail sent: %s", item["subject"])
    return sent
