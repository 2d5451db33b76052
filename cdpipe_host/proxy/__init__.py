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

Modules: ``settings`` (the JSON file the proxy role writes), ``desired`` (what Redis
asks for, validated, and the weights), ``render`` (haproxy.cfg text), ``controller``
(one reconciliation pass and the daemon), ``__main__`` (the command line).
"""
