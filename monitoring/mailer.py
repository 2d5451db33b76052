"""Alert mail: an outbox in Redis, delivered over SMTP and retried with backoff.

A message is queued in the same Redis transaction as the alert transition that caused
it, so a crash between the two neither loses nor doubles it; a message that cannot be
sent stays queued (surviving restarts) until it is sent.

Delivery is plain SMTP, STARTTLS or TLS from the first byte (``Smtp.security``); with
TLS the certificate and the host name are always verified, and STARTTLS that the
server does not offer is a failure, never a fall-back to plain text.

Two kinds of failure: the SMTP server's (down, refusing the connection, TLS failing,
the login refused, the sender or the recipients refused, a temporary 4xx): every
message would fail alike, so the round stops, the message waits and one line says
which (``server_failure``); and the message's own (it cannot be built, or the server
refuses its data with a 5xx): the round goes on with the next one, and after
``MAX_TRIES`` such failures the message is set aside in ``monitor:outbox:dead`` (logged
once), never blocking the rest. An outbox entry that is not a message at all is set
aside at once. Headers are built from values stripped of control characters and cut to
a bounded length, so no value (an instance id, an alert name) can inject a header.
"""

from __future__ import annotations

import logging
import re
import smtplib
import ssl
import time
import uuid
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

import redis

from cdpipe_host.keys import MONITOR_OUTBOX, MONITOR_OUTBOX_DEAD
from cdpipe_host.names import one_line, shown
from cdpipe_host.values import text
from monitoring.config import Smtp
from monitoring.records import OutboxMail

log = logging.getLogger("monitor.mail")
OUTBOX = MONITOR_OUTBOX
DEAD = MONITOR_OUTBOX_DEAD
MAX_BACKOFF_SECONDS = 300.0
MAX_TRIES = 5  # failures of a message's own before it is set aside
DEAD_KEEP = 1000  # the newest set-aside messages kept
SUBJECT_CHARS = 200
# C0 and C1 controls, DEL, and the Unicode line and paragraph separators.
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
MESSAGE_ID = re.compile(r"[0-9a-f]{1,64}")


class BadMessage(Exception):
    """This message (not the server) is why it cannot be sent."""


def message(subject: str, body: str) -> str:
    """A new outbox entry (JSON of an OutboxMail)."""
    return OutboxMail(id=uuid.uuid4().hex, subject=subject, body=body,
                      queued=time.time()).dumps()


def header_text(value: str, limit: int = SUBJECT_CHARS) -> str:
    """A value made safe for a header: every run of control characters (CR and LF
    among them) becomes one space, and it is cut to ``limit`` characters."""
    clean = CONTROL.sub(" ", value).strip()
    return clean if len(clean) <= limit else clean[:limit - 3] + "..."


def build(smtp: Smtp, subject: str, body: str, message_id: str) -> EmailMessage:
    """The message, or BadMessage when its content cannot make one."""
    msg = EmailMessage()
    try:
        msg["From"] = smtp.sender
        msg["To"] = ", ".join(smtp.recipients)
        msg["Subject"] = header_text(subject)
        msg["Date"] = formatdate(localtime=False)
        idstring = message_id if MESSAGE_ID.fullmatch(message_id) else None
        msg["Message-ID"] = make_msgid(idstring=idstring, domain="cdpipe")
        msg.set_content(body)
        msg.as_bytes()  # what sending does: fails here on what cannot be encoded
    except (ValueError, TypeError) as exc:
        raise BadMessage(f"cannot build the message: {exc}") from None
    return msg


def tls_context(smtp: Smtp) -> ssl.SSLContext:
    """Certificate and host name always verified: against ``ca_file`` when set, else
    the system's CAs."""
    context = ssl.create_default_context(cafile=smtp.ca_file)
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def _connect(smtp: Smtp) -> smtplib.SMTP:
    if smtp.security == "tls":
        return smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=smtp.timeout_seconds,
                                context=tls_context(smtp))
    client = smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout_seconds)
    if smtp.security == "starttls":
        try:
            client.starttls(context=tls_context(smtp))  # refused if not offered: no downgrade
        except BaseException:
            client.close()
            raise
    return client


def send(smtp: Smtp, msg: EmailMessage) -> None:
    """Sends over SMTP. BadMessage when the server refuses this message's data for
    good (5xx); the server's own failures (down, TLS, login) raise OSError or
    SMTPException."""
    user = smtp.login_user
    password = smtp.password() if user else None
    with _connect(smtp) as client:
        if user and password:
            client.login(user, password)
        try:
            client.send_message(msg)
        except smtplib.SMTPDataError as exc:
            if exc.smtp_code >= 500:
                raise BadMessage(f"the server refused it: {exc.smtp_code} "
                                 f"{exc.smtp_error!r}") from None
            raise


def server_failure(smtp: Smtp, exc: BaseException) -> str:
    """Why the server could not take mail, in one line: which failure it was."""
    where = smtp.describe()
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return (f"login as {shown(smtp.login_user or '')} refused by {where}: "
                f"{exc.smtp_code} {one_line(str(text(exc.smtp_error)), 200)}")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (f"TLS with {where} failed, its certificate is not trusted: "
                f"{exc.verify_message or exc.reason}"
                + ("" if smtp.ca_file else " (a private relay: set ca_file)"))
    if isinstance(exc, ssl.SSLError):
        return f"TLS with {where} failed: {exc.reason or exc}"
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return f"{where} does not offer it: {exc}"
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"{where} answered {exc.smtp_code} {one_line(str(text(exc.smtp_error)), 200)}"
    if isinstance(exc, smtplib.SMTPException):
        return f"SMTP with {where} failed: {exc}"
    if isinstance(exc, OSError) and smtp.password_file and exc.filename == smtp.password_file:
        return f"cannot read the SMTP password file {smtp.password_file}: {exc.strerror}"
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
    return f"SMTP server {where} unreachable: {reason}"


def _item(raw: str) -> OutboxMail | None:
    """An outbox entry as a message, or None when it is not one."""
    return OutboxMail.loads(raw)


def _set_aside(r: redis.Redis, raw: str, reason: str) -> None:
    pipe = r.pipeline(transaction=True)
    pipe.lrem(OUTBOX, 1, raw)
    pipe.lpush(DEAD, raw)
    pipe.ltrim(DEAD, 0, DEAD_KEEP - 1)
    pipe.execute()
    log.error("mail %s set aside in %s: %s", shown(raw), DEAD, reason)


def _requeue(r: redis.Redis, raw: str, item: OutboxMail) -> None:
    pipe = r.pipeline(transaction=True)  # both or neither: the message is never lost
    pipe.lrem(OUTBOX, 1, raw)
    pipe.lpush(OUTBOX, item.dumps())
    pipe.execute()


def deliver_due(r: redis.Redis, smtp: Smtp, now: float | None = None) -> int:
    """Sends every queued message that is due; returns how many were sent."""
    now = time.time() if now is None else now
    sent = 0
    for entry in r.lrange(OUTBOX, 0, -1):
        raw = str(text(entry))
        item = _item(raw)
        if item is None:
            _set_aside(r, raw, "not a message of the outbox")
            continue
        # Not due yet; a next try further away than the longest backoff means the wall
        # clock stepped back since it was set: due now, not that much later.
        if now < item.next_try <= now + MAX_BACKOFF_SECONDS:
            continue
        subject = shown(item.subject)
        try:
            send(smtp, build(smtp, item.subject, item.body, item.id))
        except BadMessage as exc:
            item.bad_tries += 1
            if item.bad_tries >= MAX_TRIES:
                _set_aside(r, raw, f"{exc} ({item.bad_tries} tries)")
                continue
            item.attempts += 1
            item.next_try = now + min(MAX_BACKOFF_SECONDS, 2.0 ** item.attempts)
            _requeue(r, raw, item)
            log.warning("mail %s not sent (%s); try %d of %d", subject, exc,
                        item.bad_tries, MAX_TRIES)
            continue  # this message's problem: the others go on
        except (OSError, smtplib.SMTPException) as exc:
            item.attempts += 1
            delay = min(MAX_BACKOFF_SECONDS, 2.0 ** item.attempts)
            item.next_try = now + delay
            _requeue(r, raw, item)
            log.warning("mail %s not sent: %s; retry %d in %.0fs", subject,
                        one_line(server_failure(smtp, exc)), item.attempts, delay)
            break  # the server is down: the rest waits for the next round
        r.lrem(OUTBOX, 1, raw)
        sent += 1
        log.info("mail sent: %s", subject)
    return sent
