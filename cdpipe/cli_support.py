"""What every command of the ``cdpipe`` command line shares: its consoles, the
``--provider`` and ``--env`` options, and the Environment a command acts on."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from cdpipe import config, redis_users
from cdpipe.environment import Environment

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False)


class ProviderChoice(StrEnum):
    local = "local"
    aws = "aws"


ProviderOpt = Annotated[ProviderChoice | None,
                        typer.Option("--provider", help="where instances live (default: local)")]

EnvOpt = Annotated[str | None, typer.Option(
    "--env", help="AWS environment id (default: the one this checkout recorded, else "
                  "CDPIPE_AWS_ENVIRONMENT, else a new env-XXXXXXXX)")]


def show(line: str) -> None:
    console.print(line, markup=False, soft_wrap=True)


def cdpipe_command() -> str:
    """How to call this cdpipe from the current directory (.venv/bin/cdpipe in a checkout)."""
    binary = Path(sys.executable).parent / "cdpipe"
    try:
        return str(binary.relative_to(Path.cwd()))
    except ValueError:
        return str(binary)


def redis_cli_hint(settings: config.Settings, port: int) -> str:
    """redis-cli as the operator: the password from its file, never on the command line."""
    password_file = settings.secrets_dir / redis_users.password_name(redis_users.OPERATOR)
    return (f"REDISCLI_AUTH=$(cat {password_file}) redis-cli --user {redis_users.OPERATOR} "
            f"-p {port}")


def note(line: str) -> None:
    """A line for the user on stderr, where it never mixes with printed JSON."""
    err_console.print(line, markup=False, soft_wrap=True)


def environment_for(provider: ProviderChoice | None, environment: str | None = None,
         show: Callable[[str], None] = show) -> Environment:
    if environment is not None:
        config.check_environment_id(environment, "--env")
    return Environment(config.load(), provider.value if provider else None, show=show,
                       environment=environment)


def stop_on_sigterm() -> Any:
    """SIGTERM ends a command the way Ctrl-C does: its playbook is stopped and the
    environment lock released on the way out. (The monitor's bound on a scale command
    sends it, and sudo relays it; by default Python would die at once, leaving its
    playbook running and the lock to expire.)"""

    def stop(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, stop)  # the handler before, to put back
