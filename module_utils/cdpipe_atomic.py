"""File writing shared by cdpipe's modules: content compared by digest, replaced atomically."""

from __future__ import annotations

import hashlib
import os
import tempfile


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def differs(path: str, data: bytes) -> bool:
    """True when the file is missing or holds other content."""
    try:
        with open(path, "rb") as handle:
            return digest(handle.read()) != digest(data)
    except FileNotFoundError:
        return True


def write_candidate(path: str, data: bytes) -> str:
    """The new content in a temporary file beside path (mode 0600 until set otherwise)."""
    handle, candidate = tempfile.mkstemp(prefix=".cdpipe-", dir=os.path.dirname(path))
    with os.fdopen(handle, "wb") as out:
        out.write(data)
    return candidate


def replace(candidate: str, path: str) -> None:
    """Same directory, so the rename is atomic and keeps the candidate's mode and owner:
    the new content is never readable with looser rights."""
    os.replace(candidate, path)
