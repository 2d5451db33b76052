"""The proxy host's command line (what the supervisor and Ansible run).

``python -m cdpipe_host.proxy CONFIG.json COMMAND``:

- ``run``: the controller daemon;
- ``render``: write haproxy.cfg from Redis once; prints changed|unchanged;
- ``register NAME --role R --address HOST:PORT``: put a server in ``servers:<role>``
  and wait until HAProxy routes to it; prints changed|unchanged;
- ``drain NAME --role R``: take a server out of ``servers:<role>`` and wait until HAProxy
  has drained and removed it (refused, exit 3, if nothing would be left in rotation;
  with --unless-canary-alert, exit 4 while canary:alert is on: a promote stops);
- ``wait-up NAME`` / ``wait-gone NAME``: only the waits;
- ``init-weight PERCENT``: set ``canary:weight`` unless it is set; prints changed|unchanged.
"""

from __future__ import annotations

import argparse
import logging
import sys

import redis

from cdpipe_host import discovery
from cdpipe_host.haproxy import HAProxyError
from cdpipe_host.keys import CANARY_WEIGHT
from cdpipe_host.proxy.controller import Controller
from cdpipe_host.proxy.settings import ControllerConfig

REFUSED = 3
CANARY_ALERT_ON = 4  # drain --unless-canary-alert while the alert is on


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cdpipe_host.proxy",
                                     description="The proxy controller: Redis -> HAProxy.")
    parser.add_argument("config", help="JSON file written by the proxy role")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="run the controller (the supervised daemon)")
    sub.add_parser("render", help="write haproxy.cfg from Redis once")
    for name in ("register", "drain", "wait-up", "wait-gone"):
        p = sub.add_parser(name, help=f"{name} a server (see the module's docstring)")
        p.add_argument("server")
        p.add_argument("--timeout", type=float, default=120,
                       help="seconds to wait for HAProxy to follow")
        if name in ("register", "drain"):
            p.add_argument("--role", required=True, choices=discovery.APP_ROLES)
        if name == "drain":
            p.add_argument("--unless-canary-alert", action="store_true",
                           help="refuse (exit 4, nothing changed) while canary:alert is on")
        if name == "register":
            p.add_argument("--address", required=True, help="host:port")
            p.add_argument("--no-wait", action="store_true",
                           help="do not wait for HAProxy to route to it")
    weight = sub.add_parser("init-weight", help="set canary:weight unless it is set")
    weight.add_argument("percent", type=int, choices=range(101), metavar="PERCENT")
    return parser


def _wait(controller: Controller, server: str, up: bool, timeout: float) -> int:
    if controller.wait(server, up, timeout):
        return 0
    print(f"error: {server} did not {'come into rotation' if up else 'drain'} in "
          f"{timeout:.0f}s; see the proxy-controller log", file=sys.stderr)
    return 1


def _command(controller: Controller, args: argparse.Namespace) -> int:
    r = controller.redis
    if args.command == "render":
        print("changed" if controller.render_once() else "unchanged")
    elif args.command == "init-weight":
        print("changed" if r.set(CANARY_WEIGHT, args.percent, nx=True) else "unchanged")
    elif args.command == "register":
        try:
            changed = discovery.register(r, args.role, args.server, args.address)
        except discovery.InvalidEntry as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print("changed" if changed else "unchanged", flush=True)
        return 0 if args.no_wait else _wait(controller, args.server, True, args.timeout)
    elif args.command == "drain":
        try:
            changed = discovery.deregister(r, args.role, args.server,
                                           unless_canary_alert=args.unless_canary_alert)
        except discovery.DrainRefused as exc:
            print(f"error: {exc}", file=sys.stderr)
            return REFUSED
        except discovery.CanaryAlert as exc:
            print(f"error: {exc}", file=sys.stderr)
            return CANARY_ALERT_ON
        print("changed" if changed else "unchanged", flush=True)
        return _wait(controller, args.server, False, args.timeout)
    else:
        return _wait(controller, args.server, args.command == "wait-up", args.timeout)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # The daemon logs to stdout (the supervisor's log); a one-shot command keeps stdout
    # for its answer (changed|unchanged), which Ansible reads.
    logging.basicConfig(level=logging.INFO,
                        stream=sys.stdout if args.command == "run" else sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    controller = Controller(ControllerConfig.load(args.config))
    if args.command == "run":
        controller.run()
        return 0
    try:
        return _command(controller, args)
    except redis.RedisError as exc:
        print(f"error: Redis unreachable: {exc}", file=sys.stderr)
        return 1
    except HAProxyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
