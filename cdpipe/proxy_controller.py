"""The proxy controller: Redis (desired state) -> HAProxy (live state) + haproxy.cfg.

Runs on the proxy host under the supervisor, next to HAProxy. It watches the keys
``servers:prod``, ``servers:canary``, ``canary:weight`` and ``canary:alert`` (keyspace
notifications, plus a full resynchronisation every second) and makes HAProxy follow:

- weights and the canary kill switch go through the runtime API at once (no reload):
  ``canary:alert on`` puts every canary server in maintenance, which stops new
  requests, persistent (cookie) ones included, while requests in flight finish;
- a server entry added is health-checked by the controller (GET /healthz) and only
  then written into haproxy.cfg, and HAProxy reloaded seamlessly (master-worker);
- a server entry removed is put in maintenance first (drain), and leaves haproxy.cfg
  once it has no connection left (or after the drain timeout).

haproxy.cfg is the base file written by Ansible (everything but the servers, the
backend last) plus one line per server with its weight and state, validated with
``haproxy -c`` before it replaces the old one, so a restart comes back the same.
Redis unreachable: HAProxy keeps its last state; the controller resyncs on reconnect.

Standard library and redis-py only: copied to the proxy host with contract.py and
haproxy_runtime.py. Usage: ``python -m cdpipe.proxy_controller CONFIG.json
run|render|wait-gone NAME|wait-up NAME``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import redis

from cdpipe.contract import (
    CANARY_ALERT,
    CANARY_WEIGHT,
    haproxy_weights,
    read_alert,
    read_weight,
    servers_key,
)
from cdpipe.haproxy_runtime import HAProxyError, HAProxyRuntime

log = logging.getLogger("proxy-controller")
ROLES = ("prod", "canary")


@dataclass(frozen=True)
class ControllerConfig:
    redis_url: str
    base_file: str
    config_file: str
    socket: str
    reload_command: str
    backend: str = "app"
    health_path: str = "/healthz"
    resync_seconds: float = 1.0
    drain_timeout_seconds: float = 60.0
    haproxy_binary: str = "haproxy"

    @classmethod
    def load(cls, path: str) -> ControllerConfig:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        data["redis_url"] = os.environ.get("CONTROLLER_REDIS_URL", data.get("redis_url", ""))
        return cls(**data)


@dataclass(frozen=True)
class Server:
    name: str
    address: str  # host:port
    role: str


@dataclass
class Desired:
    servers: dict[str, Server] = field(default_factory=dict)
    canary_weight: int = 33
    canary_alert: bool = False


def read_desired(client: redis.Redis) -> Desired:
    pipe = client.pipeline(transaction=False)
    for role in ROLES:
        pipe.hgetall(servers_key(role))
    pipe.get(CANARY_WEIGHT)
    pipe.get(CANARY_ALERT)
    *hashes, weight, alert = pipe.execute()
    desired = Desired(canary_weight=read_weight(weight), canary_alert=read_alert(alert))
    for role, entries in zip(ROLES, hashes, strict=True):
        for name, address in sorted(entries.items()):
            if valid_address(address) and valid_name(name):
                desired.servers[name] = Server(name, address, role)
            else:
                log.warning("invalid entry %s=%r in %s; ignored", name, address,
                            servers_key(role))
    return desired


def valid_name(name: str) -> bool:
    return bool(name) and all(c.isalnum() or c in "-_." for c in name)


def valid_address(address: str) -> bool:
    host, _, port = address.rpartition(":")
    return bool(host) and port.isdigit() and 0 < int(port) < 65536 and " " not in host


def parse_servers(config_text: str) -> dict[str, Server]:
    """Servers of the rendered file, from the lines this controller writes."""
    servers: dict[str, Server] = {}
    for line in config_text.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[0] == "server" and "#role=" in line:
            role = line.rsplit("#role=", 1)[1].strip()
            servers[fields[1]] = Server(fields[1], fields[2], role)
    return servers


def weights(members: dict[str, Server], desired: Desired) -> dict[str, int]:
    """Weight of each role's servers, counting only servers that are wanted."""
    wanted = [s for s in members.values() if s.name in desired.servers]
    prod_w, canary_w = haproxy_weights(
        desired.canary_weight,
        sum(1 for s in wanted if s.role == "prod"),
        sum(1 for s in wanted if s.role == "canary"),
    )
    return {"prod": prod_w, "canary": canary_w}


def render(base: str, servers: dict[str, Server], desired: Desired) -> str:
    role_weight = weights(servers, desired)
    lines = [base.rstrip("\n"), "    # servers: written by the proxy controller from Redis"]
    for server in sorted(servers.values(), key=lambda s: (s.role != "prod", s.name)):
        weight = role_weight[server.role]
        gone = server.name not in desired.servers
        off = gone or (server.role == "canary" and desired.canary_alert)
        lines.append(
            f"    server {server.name} {server.address} weight {weight} cookie {server.name}"
            f"{' disabled' if off else ''}  #role={server.role}"
        )
    return "\n".join(lines) + "\n"


class Controller:
    def __init__(self, cfg: ControllerConfig) -> None:
        self.cfg = cfg
        self.runtime = HAProxyRuntime(cfg.socket)
        self.redis = redis.Redis.from_url(cfg.redis_url, decode_responses=True,
                                          socket_timeout=2, socket_connect_timeout=2,
                                          health_check_interval=10)
        self.draining_since: dict[str, float] = {}

    # -- the file ---------------------------------------------------------------------
    def current_text(self) -> str:
        try:
            return Path(self.cfg.config_file).read_text(encoding="utf-8")
        except FileNotFoundError:
            return ""

    def healthy(self, server: Server) -> bool:
        url = f"http://{server.address}{self.cfg.health_path}"
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def write_config(self, text: str) -> bool:
        """Validate and install haproxy.cfg; False (and the old file kept) if invalid."""
        target = Path(self.cfg.config_file)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".haproxy.", suffix=".cfg")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o600)
        check = subprocess.run([self.cfg.haproxy_binary, "-c", "-q", "-f", tmp],
                               capture_output=True, text=True, check=False)
        if check.returncode != 0:
            os.unlink(tmp)
            log.error("rendered haproxy.cfg is invalid, kept the old one: %s",
                      (check.stderr or check.stdout).strip())
            return False
        os.replace(tmp, target)
        return True

    def reload(self) -> None:
        subprocess.run(shlex.split(self.cfg.reload_command), check=False,
                       capture_output=True, timeout=30)

    # -- one pass ---------------------------------------------------------------------
    def plan_membership(self, desired: Desired, configured: dict[str, Server],
                        live: dict[str, int]) -> dict[str, Server]:
        """The servers haproxy.cfg should hold now: new ones only when healthy, removed
        ones only once drained."""
        members: dict[str, Server] = {}
        for name, server in configured.items():
            wanted = desired.servers.get(name)
            if wanted is not None:
                members[name] = wanted
                self.draining_since.pop(name, None)
                continue
            started = self.draining_since.setdefault(name, time.monotonic())
            connections = live.get(name, 0)
            timed_out = time.monotonic() - started > self.cfg.drain_timeout_seconds
            if connections > 0 and not timed_out:
                members[name] = server  # still draining
            else:
                self.draining_since.pop(name, None)
                log.info("removed %s (%s) after draining", name, server.address)
        for name, server in desired.servers.items():
            if name not in members and name not in configured:
                if self.healthy(server):
                    log.info("adding %s (%s) to %s: health check passed", name,
                             server.address, server.role)
                    members[name] = server
                else:
                    log.info("waiting for %s (%s) to pass its health check", name,
                             server.address)
        return members

    def apply_runtime(self, desired: Desired, members: dict[str, Server]) -> None:
        """Weights and maintenance states through the runtime API: no reload."""
        live = self.runtime.servers(self.cfg.backend)
        role_weight = weights(members, desired)
        for name, server in members.items():
            state = live.get(name)
            if state is None:
                continue
            off = name not in desired.servers or (server.role == "canary"
                                                  and desired.canary_alert)
            if off and not state.in_maintenance:
                self.runtime.set_state(self.cfg.backend, name, "maint")
                log.info("%s: maintenance (%s)", name,
                         "draining" if name not in desired.servers else "canary alert")
            weight = role_weight[server.role]
            if not off and state.weight != weight:
                self.runtime.set_weight(self.cfg.backend, name, weight)
            if not off and state.in_maintenance:
                self.runtime.set_state(self.cfg.backend, name, "ready")
                log.info("%s: ready, weight %d", name, weight)

    def connections(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for row in self.runtime.stats():
            if row.get("pxname") == self.cfg.backend and row.get("svname") not in (
                "FRONTEND", "BACKEND"
            ):
                counts[row["svname"]] = int(row.get("scur") or 0)
        return counts

    def reconcile(self, desired: Desired, live_ok: bool = True) -> bool:
        """One pass; True when haproxy.cfg changed."""
        text = self.current_text()
        configured = parse_servers(text)
        live_conns: dict[str, int] = {}
        if live_ok:
            # Runtime first: the kill switch and weights must not wait for a file write;
            # connections are counted after removed servers went into maintenance.
            self.apply_runtime(desired, configured)
            live_conns = self.connections()
        members = self.plan_membership(desired, configured, live_conns)
        base = Path(self.cfg.base_file).read_text(encoding="utf-8")
        new_text = render(base, members, desired)
        if new_text == text:
            return False
        if not self.write_config(new_text):
            return False
        membership_changed = set(members) != set(configured)
        if live_ok and (membership_changed or not text.startswith(base.rstrip("\n"))):
            self.reload()
            log.info("haproxy.cfg: servers now %s; HAProxy reloaded",
                     ", ".join(sorted(members)) or "none")
        return True

    # -- the daemon -------------------------------------------------------------------
    def run(self) -> None:
        log.info("proxy controller watching %s", self.cfg.redis_url.split("@")[-1])
        while True:
            try:
                pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
                pubsub.psubscribe("__keyspace@0__:servers:*", "__keyspace@0__:canary:*")
                log.info("connected to Redis; resynchronising")
                self._safe_reconcile()
                next_resync = time.monotonic() + self.cfg.resync_seconds
                while True:
                    timeout = max(0.0, next_resync - time.monotonic())
                    message = pubsub.get_message(timeout=timeout)
                    if message is not None:
                        # Drain what else arrived, then one pass for all of it.
                        while pubsub.get_message(timeout=0) is not None:
                            pass
                        self._safe_reconcile()
                    if time.monotonic() >= next_resync:
                        self._safe_reconcile()
                        next_resync = time.monotonic() + self.cfg.resync_seconds
            except redis.RedisError as exc:
                log.warning("Redis unreachable (%s); HAProxy keeps its state; retrying", exc)
                time.sleep(1)

    def _safe_reconcile(self) -> None:
        desired = read_desired(self.redis)  # RedisError goes up: reconnect loop
        try:
            self.reconcile(desired)
        except HAProxyError as exc:
            log.warning("HAProxy not reachable (%s); retrying", exc)

    def wait(self, name: str, want_up: bool, timeout: float) -> bool:
        """Until the server is gone, or up: in rotation, or held out only by the canary
        kill switch (that is policy, not health: the deploy itself succeeded)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                live = self.runtime.servers(self.cfg.backend)
            except HAProxyError:
                live = {}
            state = live.get(name)
            if want_up and state is not None:
                if state.op_state == 2 and not state.in_maintenance:
                    return True
                if state.in_maintenance and self._held_by_alert(name):
                    return True
            if not want_up and state is None:
                return True
            time.sleep(0.2)
        return False


    def _held_by_alert(self, name: str) -> bool:
        try:
            desired = read_desired(self.redis)
        except redis.RedisError:
            return False
        server = desired.servers.get(name)
        return bool(server and server.role == "canary" and desired.canary_alert
                    and self.healthy(server))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="proxy-controller", description=__doc__.split("\n")[0])
    parser.add_argument("config", help="JSON file written by the proxy role")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="run the controller (the supervised daemon)")
    sub.add_parser("render", help="write haproxy.cfg from Redis once; prints changed|unchanged")
    for name in ("wait-gone", "wait-up"):
        p = sub.add_parser(name, help=f"{name.replace('-', ' until ')} in HAProxy")
        p.add_argument("server")
        p.add_argument("--timeout", type=float, default=120)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    controller = Controller(ControllerConfig.load(args.config))
    if args.command == "run":
        controller.run()
        return 0
    if args.command == "render":
        try:
            desired = read_desired(controller.redis)
        except redis.RedisError as exc:
            print(f"error: Redis unreachable: {exc}", file=sys.stderr)
            return 1
        live_ok = Path(controller.cfg.socket).exists()
        try:
            changed = controller.reconcile(desired, live_ok=live_ok)
        except HAProxyError:
            changed = controller.reconcile(desired, live_ok=False)
        print("changed" if changed else "unchanged")
        return 0
    ok = controller.wait(args.server, args.command == "wait-up", args.timeout)
    if not ok:
        print(f"error: {args.server} did not become "
              f"{'up' if args.command == 'wait-up' else 'gone'} in {args.timeout:.0f}s",
              file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
