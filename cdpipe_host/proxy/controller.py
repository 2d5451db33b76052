"""One reconciliation pass (Redis's desired state -> HAProxy's runtime state and
haproxy.cfg), the daemon loop around it, and the waits Ansible asks for."""

from __future__ import annotations

import logging
import os
import shlex
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import redis

from cdpipe_host.haproxy import ConfigRejected, HAProxyError, HAProxyRuntime, check_config
from cdpipe_host.keys import CONTROLLER_CHANNELS
from cdpipe_host.names import DECODE_ERRORS, OnceLog
from cdpipe_host.proxy.desired import Desired, Server, read_desired, weights
from cdpipe_host.proxy.render import parse_servers, render
from cdpipe_host.proxy.settings import ControllerConfig

log = logging.getLogger("proxy-controller")
# A canary kept in rotation under its alert, the last server serving: said once.
LAST_SERVING = OnceLog(log)


class HAProxyFiles:
    """haproxy.cfg on disk: read, validated with ``haproxy -c`` and installed atomically,
    and the reload that makes HAProxy read it."""

    def __init__(self, cfg: ControllerConfig) -> None:
        self.cfg = cfg

    def base(self) -> str:
        return Path(self.cfg.base_file).read_text(encoding="utf-8")

    def current(self) -> str:
        try:
            return Path(self.cfg.config_file).read_text(encoding="utf-8")
        except FileNotFoundError:
            return ""

    def install(self, text: str) -> None:
        """Validate and install haproxy.cfg; ConfigRejected (with HAProxy's message, the
        old file kept) if HAProxy refuses it."""
        target = Path(self.cfg.config_file)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".haproxy.", suffix=".cfg")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o600)
        problem = check_config(self.cfg.haproxy_binary, tmp)
        if problem is not None:
            os.unlink(tmp)
            raise ConfigRejected(f"HAProxy refuses the rendered haproxy.cfg, kept the "
                                 f"old one: {problem}")
        os.replace(tmp, target)

    def reload(self) -> None:
        if self.cfg.master_socket:
            self._reload_through_master()
            return
        subprocess.run(shlex.split(self.cfg.reload_command), check=False,
                       capture_output=True, timeout=30)


    def _reload_through_master(self, attempts: int = 50) -> None:
        """`reload` on the master CLI; while a previous reload re-executes the master,
        its socket refuses for a moment, so that is retried (for up to 10 s)."""
        for attempt in range(attempts):
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                    sock.settimeout(30)
                    sock.connect(self.cfg.master_socket)
                    sock.sendall(b"reload\n")
                    while sock.recv(4096):  # the master answers, then closes
                        pass
                return
            except (ConnectionRefusedError, FileNotFoundError) as exc:
                if attempt == attempts - 1:
                    raise HAProxyError(f"master socket {self.cfg.master_socket}: {exc}") from exc
                time.sleep(0.2)
            except OSError as exc:
                raise HAProxyError(f"master socket {self.cfg.master_socket}: {exc}") from exc


class Controller:
    def __init__(self, cfg: ControllerConfig) -> None:
        self.cfg = cfg
        self.runtime = HAProxyRuntime(cfg.socket)
        self.files = HAProxyFiles(cfg)
        self.redis = redis.Redis.from_url(cfg.redis_url, decode_responses=True,
                                          socket_timeout=2, socket_connect_timeout=2,
                                          health_check_interval=10,
                                          encoding_errors=DECODE_ERRORS)
        self.draining_since: dict[str, float] = {}
        # Whether the running HAProxy was compared with haproxy.cfg since this controller
        # started (once: right after a reload HAProxy may still answer with the old list).
        self.compared_running = False

    def healthy(self, server: Server) -> bool:
        url = f"http://{server.address}{self.cfg.health_path}"
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    # -- one pass ---------------------------------------------------------------------
    def plan_membership(self, desired: Desired, configured: dict[str, Server],
                        live: dict[str, int]) -> dict[str, Server]:
        """The servers haproxy.cfg should hold now: new ones only when healthy, removed
        ones only once drained (``live``: current connections by server)."""
        members: dict[str, Server] = {}
        for name, server in configured.items():
            wanted = desired.servers.get(name)
            if wanted is not None:
                members[name] = wanted
                self.draining_since.pop(name, None)
                continue
            started = self.draining_since.setdefault(name, time.monotonic())
            timed_out = time.monotonic() - started > self.cfg.drain_timeout_seconds
            if live.get(name, 0) > 0 and not timed_out:
                members[name] = server  # still draining
            else:
                self.draining_since.pop(name, None)
                log.info("removed %s (%s) after draining", name, server.address)
        for name, server in desired.servers.items():
            if name in members or name in configured:
                continue
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
        held = desired.held_out_of(members.values())
        for name, server in members.items():
            state = live.get(name)
            if state is None:
                continue
            off = name in held
            if not off and desired.held_out(server):
                LAST_SERVING.warning((name,), f"{name}: kept in rotation despite the canary "
                                           "alert: no other server is serving")
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
        return {name: s.sessions for name, s in self.runtime.stats(self.cfg.backend).items()}

    def reconcile(self, desired: Desired, live_ok: bool = True) -> bool:
        """One pass; True when haproxy.cfg changed."""
        text = self.files.current()
        configured = parse_servers(text)
        live_conns: dict[str, int] = {}
        if live_ok:
            # Runtime first: the kill switch and weights must not wait for a file write;
            # connections are counted after removed servers went into maintenance.
            self.apply_runtime(desired, configured)
            live_conns = self.connections()
        members = self.plan_membership(desired, configured, live_conns)
        base = self.files.base()
        new_text = render(base, members, desired, self.cfg.cookie_key)
        # A running HAProxy that serves other servers than the file when the controller
        # starts (a reload was lost: the controller died right after writing the file)
        # is reloaded too. Checked once: right after a reload the old list still answers.
        stale = False
        if live_ok and not self.compared_running:
            self.compared_running = True
            stale = set(self.runtime.servers(self.cfg.backend)) != set(configured)
        if new_text == text and not stale:
            return False
        if new_text != text:
            self.files.install(new_text)
        membership_changed = stale or set(members) != set(configured)
        if live_ok and (membership_changed or not text.startswith(base.rstrip("\n"))):
            self.reload_until_serving(set(members))
            log.info("haproxy.cfg: servers now %s; HAProxy reloaded",
                     ", ".join(sorted(members)) or "none")
        return True

    def reload_until_serving(self, names: set[str], attempts: int = 3,
                             wait_seconds: float = 5.0) -> None:
        """Reload, then wait until the running HAProxy serves ``names``; a reload that was
        lost (asked while the master was still re-executing for the previous one) is
        asked again. The old process may answer for a moment after a reload, so the
        list is polled rather than read once."""
        for attempt in range(attempts):
            self.files.reload()
            deadline = time.monotonic() + wait_seconds
            while time.monotonic() < deadline:
                try:
                    if set(self.runtime.servers(self.cfg.backend)) == names:
                        return
                except HAProxyError:
                    pass  # between the old process and the new one
                time.sleep(0.1)
            if attempt < attempts - 1:
                log.warning("HAProxy does not serve %s %.0f s after a reload; reloading again",
                            ", ".join(sorted(names)) or "no server", wait_seconds)
        log.error("HAProxy still does not serve %s after %d reloads",
                  ", ".join(sorted(names)) or "no server", attempts)

    def render_once(self) -> bool:
        """What Ansible runs before HAProxy may be up: one pass, through the runtime API
        only if HAProxy answers. RedisError goes up."""
        desired = read_desired(self.redis)
        if not Path(self.cfg.socket).exists():
            return self.reconcile(desired, live_ok=False)
        try:
            return self.reconcile(desired)
        except ConfigRejected:
            raise
        except HAProxyError:
            return self.reconcile(desired, live_ok=False)

    # -- the daemon -------------------------------------------------------------------
    def run(self) -> None:
        log.info("proxy controller watching %s", self.cfg.redis_url.split("@")[-1])
        while True:
            try:
                pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
                pubsub.psubscribe(*CONTROLLER_CHANNELS)
                log.info("connected to Redis; resynchronising")
                self._safe_reconcile()
                next_resync = time.monotonic() + self.cfg.resync_seconds
                while True:
                    timeout = max(0.0, next_resync - time.monotonic())
                    if pubsub.get_message(timeout=timeout) is not None:
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
        except ConfigRejected as exc:
            log.error("%s", exc)
        except HAProxyError as exc:
            log.warning("HAProxy not reachable (%s); retrying", exc)

    # -- waits for Ansible ------------------------------------------------------------
    def wait(self, name: str, want_up: bool, timeout: float) -> bool:
        """Until the server is gone, or up: in rotation, or held out only by the canary
        kill switch (that is policy, not health: the deploy itself succeeded)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                state = self.runtime.servers(self.cfg.backend).get(name)
            except HAProxyError:
                state = None
            if not want_up and state is None:
                return True
            if want_up and state is not None and (
                    state.in_rotation or (state.in_maintenance and self._held_by_alert(name))):
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
