"""Providers by name: where instances live."""

from __future__ import annotations

from cdpipe.config import Settings
from cdpipe.errors import CdpipeError
from cdpipe.providers.base import Provider


def get(name: str, settings: Settings) -> Provider:
    if name == "local":
        from cdpipe.providers.local import LocalProvider

        return LocalProvider(settings)
    if name == "aws":
        from cdpipe.providers.aws.provider import Ec2Provider

        return Ec2Provider(settings)
    raise CdpipeError(f"provider {name!r} is not available here; use --provider local")
