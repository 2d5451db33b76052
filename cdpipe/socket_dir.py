"""The runtime directory of a local environment: where its UNIX sockets live.

A socket's path may hold at most 107 bytes (``sun_path``), so sockets do not live under
``CDPIPE_HOME``, which may be any checkout path (Jenkins workspaces are long). They live
in a short directory of the system's temporary directory, one per ``CDPIPE_HOME`` (its
name carries the user and a hash of the home's path), mode 0700, owned by this user:
``/tmp/cdpipe-<uid>-<hash>/<instance>/supervisor.sock``. ``CDPIPE_RUNTIME_DIR`` names
another directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import tempfile
from pathlib import Path

from cdpipe.errors import CdpipeError

# A socket path must fit in sun_path (108 bytes with its NUL); the longest one under
# the runtime directory is "<instance id>/supervisor.sock" (instance ids are short).
SUN_PATH_MAX = 107
LONGEST_SOCKET = "canary-99/supervisor.sock.12345.tmp"
# The system's temporary directory is used when it leaves room for that; else /tmp.
FALLBACK_BASE = Path("/tmp")


def default_for(home: Path) -> Path:
    """The runtime directory of ``home``: stable for a home, distinct between homes."""
    digest = hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:12]
    name = f"cdpipe-{os.getuid()}-{digest}"
    base = Path(tempfile.gettempdir())
    if len(str(base / name / LONGEST_SOCKET)) > SUN_PATH_MAX:
        base = FALLBACK_BASE
    return base / name


def ensure(path: Path) -> Path:
    """Create ``path`` (mode 0700), or accept it only if it is this user's own directory
    and no one else's: a directory under a shared /tmp may have been made by another."""
    if len(str(path / LONGEST_SOCKET)) > SUN_PATH_MAX:
        raise CdpipeError(f"runtime directory {path} is too long for UNIX sockets; "
                          "set CDPIPE_RUNTIME_DIR to a shorter path (e.g. /tmp/cdpipe)")
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise CdpipeError(f"runtime directory {path} exists but is not a directory of "
                          f"user {os.getuid()}; remove it or set CDPIPE_RUNTIME_DIR")
    if stat.S_IMODE(info.st_mode) != 0o700:
        path.chmod(0o700)
    return path


def remove_if_empty(path: Path) -> None:
    with contextlib.suppress(OSError):  # gone already, or holds another's sockets
        path.rmdir()
