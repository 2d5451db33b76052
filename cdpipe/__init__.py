"""cdpipe: continuous delivery from a pushed commit to a monitored production."""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
__version__ = "0.1.0"
