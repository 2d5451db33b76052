"""The code that runs on the machines: the Redis key schema and how its values read,
flag values, the HAProxy runtime client, the proxy controller, the discovery command,
instance resource usage and the metrics agent.

Shipped whole to every host by the ``code`` role (the app's releases carry it too, being
checkouts of this repository). It imports only the standard library, redis-py, psutil
and prometheus-client: never the control plane (``cdpipe``), which stays on the laptop
or the Jenkins agent.
"""
