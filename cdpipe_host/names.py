"""The one validator of names and addresses read from Redis (the discovery service's
``servers:<role>`` entries, flag names), and how a hostile value is shown in a log line
or an error: bounded and with its control characters escaped.

Whoever reads these keys (the proxy controller, the monitor, the CLI) keeps only the
entries that pass, and logs each one it skips once (``OnceLog``), not on every poll:
anyone who can write the key may have written anything, of any size.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import re

INSTANCE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
FLAG_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
PORT = re.compile(r"[0-9]{1,5}")
MAX_HOSTNAME = 253
SHOWN_CHARS = 60
# How every reader decodes Redis replies (redis-py's ``encoding_errors``): bytes that are
# not UTF-8 become lone surrogates, which no validator here accepts and ``shown``
# escapes, and which encode back to the very same bytes, so a key or list entry read
# that way can still be named (GET, LREM). The default, "strict", raises instead.
DECODE_ERRORS = "surrogateescape"


def shown(value: object, limit: int = SHOWN_CHARS) -> str:
    """A value as a log line or an error may carry it: ``repr`` (control characters
    escaped), cut after ``limit`` characters with its full length said."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"


CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def one_line(message: str, limit: int = 400) -> str:
    """A message as one line of a terminal: control characters escaped (no line break,
    no escape sequence), cut after ``limit`` characters."""
    line = CONTROL.sub(lambda m: repr(m.group())[1:-1], message)
    return line if len(line) <= limit else f"{line[:limit]}... ({len(line)} characters)"


def instance_id_problem(name: str) -> str | None:
    """Why ``name`` is not an instance id (letters, digits, '-', '_', '.'; at most 64,
    starting with a letter or digit), or None when it is one."""
    if INSTANCE_ID.fullmatch(name):
        return None
    return "not an instance id (1-64 of A-Z a-z 0-9 - _ ., starting with a letter or digit)"


def flag_name_problem(name: str) -> str | None:
    """Why ``name`` is not a flag name (the same alphabet as an instance id), or None."""
    if FLAG_NAME.fullmatch(name):
        return None
    return "not a flag name (1-64 of A-Z a-z 0-9 - _ ., starting with a letter or digit)"


def _host_problem(host: str) -> str | None:
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return "not an IPv6 address in brackets"
        return None
    if len(host) > MAX_HOSTNAME:
        return f"host longer than {MAX_HOSTNAME} characters"
    if all(part.isascii() and part.isdigit() for part in host.split(".")):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return "not an IPv4 address"
        return None
    if not all(HOST_LABEL.fullmatch(label) for label in host.split(".")):
        return "host is neither an IP address nor a DNS name"
    return None


def address_problem(address: str) -> str | None:
    """Why ``address`` is not ``host:port`` (an IPv4 address, a DNS name or a bracketed
    IPv6 address; a port 1-65535), or None when it is."""
    host, sep, port = address.rpartition(":")
    if not sep or not host:
        return "not host:port"
    if not PORT.fullmatch(port) or not 0 < int(port) < 65536:
        return "port is not a number 1-65535"
    return _host_problem(host)


class OnceLog:
    """Logs each distinct problem once per process, whatever the number of polls that
    meet it again; bounded, so a flood of distinct bad entries cannot grow it for ever
    (past ``limit`` it starts again, so a long flood is logged again now and then)."""

    def __init__(self, logger: logging.Logger, limit: int = 1000) -> None:
        self.logger = logger
        self.limit = limit
        self.seen: set[bytes] = set()  # digests: a 1 MB entry costs 32 bytes here

    def warning(self, identity: tuple[str, ...], line: str) -> bool:
        """Logs ``line`` unless ``identity`` was logged before; True when it logged."""
        digest = hashlib.sha256("\0".join(identity).encode(errors="replace")).digest()
        if digest in self.seen:
            return False
        if len(self.seen) >= self.limit:
            self.seen.clear()
        self.seen.add(digest)
        self.logger.warning("%s", line)
        return True


def server_entries(key: str, entries: dict[str, str], once: OnceLog) -> dict[str, str]:
    """The valid entries (instance id -> host:port) of the ``servers:<role>`` hash
    ``key``, sorted by id; each invalid one is skipped and logged once."""
    valid: dict[str, str] = {}
    for name, address in sorted(entries.items()):
        problem = instance_id_problem(name) or address_problem(address)
        if problem is None:
            valid[name] = address
            continue
        once.warning((key, name, address),
                     f"invalid entry {shown(name)}={shown(address)} in {key} ({problem}); "
                     "ignored")
    return valid
