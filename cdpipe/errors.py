"""The one error type a user sees: a single line saying what is wrong and what to do."""


class CdpipeError(Exception):
    """A failure the user can act on; the CLI prints it as one line and exits with
    ``exit_code`` (1)."""

    exit_code = 1


class ProviderRefused(CdpipeError):
    """The provider refused to create an instance for want of capacity or within its
    limits (AWS: InsufficientInstanceCapacity, InstanceLimitExceeded...): a retry later
    may succeed. `cdpipe scale out` exits 4 on it, so the monitor can say so."""

    exit_code = 4
