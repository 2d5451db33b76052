# A callback plugin of the project: Ansible's results as JSON lines, for cdpipe.
"""Writes what cdpipe needs of a playbook run as JSON lines to the file named by
``CDPIPE_ANSIBLE_EVENTS`` (nothing without it): each task's start, each host's result
(status, the task, the result's message and output), and the recap. cdpipe reads these
structured events instead of Ansible's human output, whose text a loop item or an
ansible-core upgrade can change; the human output still goes to the log."""

from __future__ import annotations

import json
import os
from typing import Any

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = r"""
name: cdpipe_events
type: notification
short_description: Results as JSON lines for cdpipe
description:
  - Writes task starts, per-host results and the recap as JSON lines to the file
    named by the environment variable C(CDPIPE_ANSIBLE_EVENTS); does nothing without it.
requirements:
  - enabled in C(callbacks_enabled) (cdpipe enables it for its own runs)
"""

# The parts of a result cdpipe shows; everything else stays in the log.
KEPT = ("msg", "stderr", "stdout", "module_stderr", "rc")


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "notification"
    CALLBACK_NAME = "cdpipe_events"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        path = os.environ.get("CDPIPE_ANSIBLE_EVENTS", "")
        self._out = open(path, "a", encoding="utf-8") if path else None  # noqa: SIM115

    def _write(self, event: dict[str, Any]) -> None:
        if self._out is not None:
            self._out.write(json.dumps(event, default=str) + "\n")
            self._out.flush()

    def _result(self, status: str, result: Any, ignored: bool = False) -> None:
        raw = result._result if isinstance(result._result, dict) else {}
        self._write({"event": "result", "status": status, "host": result._host.get_name(),
                     "task": result._task.get_name(), "ignored": ignored,
                     "item": str(raw.get("item", "")) if "item" in raw else None,
                     "result": {k: raw[k] for k in KEPT if k in raw}})

    def v2_playbook_on_task_start(self, task: Any, is_conditional: bool) -> None:
        self._write({"event": "task", "task": task.get_name()})

    def v2_runner_on_ok(self, result: Any) -> None:
        self._result("changed" if result._result.get("changed") else "ok", result)

    def v2_runner_on_failed(self, result: Any, ignore_errors: bool = False) -> None:
        self._result("failed", result, ignored=ignore_errors)

    def v2_runner_on_unreachable(self, result: Any) -> None:
        self._result("unreachable", result)

    def v2_runner_item_on_failed(self, result: Any) -> None:
        self._result("item_failed", result)

    def v2_playbook_on_stats(self, stats: Any) -> None:
        recap = {host: {name: int(stats.summarize(host)[name])
                        for name in ("ok", "changed", "unreachable", "failures")}
                 for host in sorted(stats.processed)}
        self._write({"event": "recap", "hosts": recap})
        if self._out is not None:
            self._out.close()
            self._out = None
