"""The dashboard as a user of its own: what it may not do itself, another user does for it
through one narrow command (the actor).

On the proxy machine the page runs as ``cdpipe-dashboard``, which cannot read the
scaler's SSH key (root on every machine) nor reach the instance profile's credentials.
Two things need them: reading the state (aws: DescribeInstances) and running promote
and rollback. ``CDPIPE_DASHBOARD_ACTOR`` names a command prefix (there: ``sudo -n -u
cdpipe-scaler /opt/cdpipe/scaler/dashboard-act``, allowed by a sudo rule for exactly
the arguments below); the dashboard then reads the state as ``ACTOR state`` prints it
and runs ``ACTOR canary promote`` / ``ACTOR canary rollback``.

Run as ``python -m cdpipe.dashboard.actor ARGS`` (the actor's side, as the other
user): ``state`` prints the environment's state as JSON; ``canary promote`` and
``canary rollback`` run the CLI's command; anything else is refused (exit 2).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys

from cdpipe import config
from cdpipe.config import Settings
from cdpipe.errors import CdpipeError
from cdpipe.state import State
from cdpipe_host.names import one_line

ACTIONS = (("state",), ("canary", "promote"), ("canary", "rollback"))
STATE_TIMEOUT = 120.0  # seconds a state read through the actor may take (aws: one Describe)


def command(settings: Settings) -> tuple[str, ...]:
    """The actor's command prefix; empty when the dashboard acts itself."""
    return tuple(shlex.split(settings.dashboard_actor))


class ActorEnvironment:
    """The environment as a dashboard without rights of its own sees it: its settings
    (its home: the operator's and the stats page's passwords only) and the state the
    actor prints. Quacks as :class:`cdpipe.environment.Environment` does for the page."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.actor = command(settings)
        self.state = State()
        self.reread()

    def reread(self) -> None:
        try:
            done = subprocess.run([*self.actor, "state"], capture_output=True, text=True,
                                  timeout=STATE_TIMEOUT, check=False,
                                  stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise CdpipeError(f"reading the state through {self.actor[0]!r} failed: "
                              f"{exc}") from None
        if done.returncode != 0:
            said = one_line(done.stderr.strip().splitlines()[-1] if done.stderr.strip()
                            else f"exit {done.returncode}", 300)
            raise CdpipeError(f"reading the state through the dashboard's actor failed: "
                              f"{said}")
        self.state = State.model_validate_json(done.stdout)


def main(argv: list[str] | None = None) -> int:
    args = tuple(sys.argv[1:] if argv is None else argv)
    if args not in ACTIONS:
        print(f"dashboard-act: refused: {one_line(' '.join(args), 200)!r} (allowed: "
              f"{', '.join(' '.join(a) for a in ACTIONS)})", file=sys.stderr)
        return 2
    if args == ("state",):
        from cdpipe.environment import Environment

        try:
            env = Environment(config.load(), show=lambda line: print(line, file=sys.stderr))
        except CdpipeError as exc:
            print(f"error: {one_line(str(exc), 400)}", file=sys.stderr)
            return 1
        print(env.state.model_dump_json())
        return 0
    os.execv(sys.executable, [sys.executable, "-m", "cdpipe.cli", *args])
    return 1  # not reached


if __name__ == "__main__":
    raise SystemExit(main())
