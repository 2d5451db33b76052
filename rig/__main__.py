"""python -m rig up|down|env|serve [--dir DIR] [--hours H]"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from rig import control, server
from rig.podman import unavailable


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rig", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "env", "serve", "check"])
    parser.add_argument("--dir", type=Path, default=control.DEFAULT_DIR,
                        help="the rig's state: key, logs, rig.json (default .rig/)")
    parser.add_argument("--hours", type=float, default=4.0,
                        help="the rig removes itself after this long (default 4)")
    parser.add_argument("--repo", type=Path, default=None,
                        help="git repository the machines clone (default this checkout)")
    args = parser.parse_args(argv)
    if args.command == "check":
        reason = unavailable()
        print(reason or "machines can run here")
        return 1 if reason else 0
    if args.command == "serve":
        return server.serve(args.dir, args.hours, args.repo or server.PROJECT_ROOT)
    if args.command == "down":
        print("rig: stopped" if control.down(args.dir) else "rig: none running")
        return 0
    try:
        info = control.up(args.dir, args.hours, args.repo) if args.command == "up" else (
            control.running(args.dir))
    except RuntimeError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    if info is None:
        print("rig: none running; `python -m rig up`", file=sys.stderr)
        return 1
    env = control.aws_environment(args.dir, info)
    text = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items())
    (args.dir / "env.sh").write_text(text, encoding="utf-8")
    if args.command == "env":
        print(text, end="")
    else:
        print(f"rig {info.rig_id} up: moto {info.moto_url}; `source {args.dir}/env.sh` "
              "points cdpipe at it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
