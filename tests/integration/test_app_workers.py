"""The app under gunicorn as the app role runs it with more than one worker: /metrics
adds up every worker's counts (prometheus-client's multiprocess mode, the directory the
role gives it and the hooks of the role's gunicorn settings)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jinja2
import requests
from prometheus_client.parser import text_string_to_metric_families

from cdpipe import PROJECT_ROOT
from devkit import free_port
from tests.support import wait_until

SETTINGS = PROJECT_ROOT / "roles" / "app" / "templates" / "gunicorn.conf.py.j2"
REQUESTS = 60


def series(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {tuple(sorted(point.labels.items())): point.value
            for family in text_string_to_metric_families(text)
            for point in family.samples if point.name == name}


def test_metrics_add_up_every_workers_counts(tmp_path: Path) -> None:
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text(jinja2.Template(SETTINGS.read_text()).render(
        ansible_managed="test", app_log_level="WARNING"))
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_99999.db").write_bytes(b"stale")  # a run before this one
    port = free_port()
    env = os.environ | {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "APP_VERSION": "abc",
                        "APP_REDIS_URL": "", "APP_USER_ID_SECRET": "test-secret"}
    gunicorn = Path(sys.executable).parent / "gunicorn"
    proc = subprocess.Popen([str(gunicorn), "--bind", f"127.0.0.1:{port}",
                             "--worker-class", "gthread", "--workers", "3", "--threads", "2",
                             "--config", str(conf), "app:create_app()"],
                            cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        def answering() -> bool:
            try:
                return requests.get(base + "/healthz", timeout=2).status_code == 200
            except requests.RequestException:
                return False
        wait_until(answering, 30, "gunicorn answering")
        assert not (metrics_dir / "counter_99999.db").exists()  # emptied at start
        sent = 0

        def batch() -> None:  # 6 clients at once, a new connection each request
            nonlocal sent
            with ThreadPoolExecutor(6) as pool:
                codes = list(pool.map(lambda _: requests.get(base + "/", timeout=5)
                                      .status_code, range(REQUESTS)))
            assert codes == [200] * REQUESTS
            sent += REQUESTS

        def workers_served() -> bool:
            """At least two workers counted requests (each its own counter file; every
            worker has a gauge file from its start: the release)."""
            batch()
            return len(list(metrics_dir.glob("counter_*.db"))) >= 2
        wait_until(workers_served, 60, "requests served by two workers or more")
        for _ in range(5):  # any worker answers /metrics with every worker's counts
            text = requests.get(base + "/metrics", timeout=5).text
            counted = series(text, "app_requests_total")
            assert counted[(("route", "/"), ("status", "200"))] == sent
            assert series(text, "app_release_info") == {(("commit", "abc"),): 1.0}
            assert series(text, "instance_cpu_percent")  # the instance's own, once
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)
