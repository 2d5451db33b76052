"""A role's defaults as Ansible loads them: every file of ``roles/<role>/defaults/main/``
in name order (the typed ``main.yml``, then ``model.yml``, generated from cdpipe's
model by ``cdpipe.ansible_values``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROLES = Path(__file__).resolve().parent.parent / "roles"


def default_files(role: str) -> list[Path]:
    return sorted((ROLES / role / "defaults" / "main").glob("*.yml"))


def role_defaults(role: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for path in default_files(role):
        found |= yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return found
