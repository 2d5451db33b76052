"""The one error type a user sees: a single line saying what is wrong and what to do."""


class CdpipeError(Exception):
    """A failure the user can act on; the CLI prints it as one line and exits 1."""
