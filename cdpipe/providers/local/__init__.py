"""The local provider: every instance a sandbox on this machine (``provider``), each
with its own process supervisor (``sandbox``)."""

from cdpipe.providers.local.provider import HOST, LocalProvider, port_in_use

__all__ = ["HOST", "LocalProvider", "port_in_use"]
