"""The runner's reading of a playbook run, from the events of
callback_plugins/cdpipe_events.py (JSON lines): progress lines, failures, the recap."""

from __future__ import annotations

import json

from cdpipe.ansible_runner import EventParser

DIRS = "app : Ensure the app directories exist."
WAIT = "app : Wait for the new release to answer /healthz."
FAIL = "app : Fail with the step that broke."
RELOAD = "proxy : Reload HAProxy."


def result(status: str, host: str, task: str, **fields: object) -> dict[str, object]:
    return {"event": "result", "status": status, "host": host, "task": task,
            "ignored": fields.pop("ignored", False), "item": fields.pop("item", None),
            "result": fields}


SAMPLE = [
    {"event": "task", "task": DIRS},
    result("changed", "prod-1", DIRS, item="/x/app"),
    result("changed", "prod-1", DIRS, item="/x/app/releases"),
    result("ok", "canary-1", DIRS, item="/y/app"),
    {"event": "task", "task": WAIT},
    result("failed", "prod-1", WAIT, msg="Status code was -1"),
    {"event": "task", "task": FAIL},
    result("failed", "prod-1", FAIL, msg="deploy of abc failed at 'x'"),
    result("changed", "proxy-1", RELOAD),  # a handler: its result names it
    {"event": "recap", "hosts": {
        "canary-1": {"ok": 18, "changed": 0, "unreachable": 0, "failures": 0},
        "prod-1": {"ok": 3, "changed": 2, "unreachable": 0, "failures": 1}}},
]


def run(events: list[dict[str, object]] = SAMPLE) -> tuple[EventParser, list[str]]:
    shown: list[str] = []
    parser = EventParser(shown.append)
    for event in events:
        parser.feed(json.dumps(event))
    return parser, shown


def test_one_progress_line_per_host_and_task() -> None:
    _, shown = run()
    dirs = [s for s in shown if "directories" in s]
    assert len(dirs) == 2
    assert any("prod-1" in s and "changed" in s for s in dirs)
    assert any("proxy-1" in s and "Reload HAProxy" in s for s in shown)


def test_recap_and_failures_are_parsed() -> None:
    parser, _ = run()
    outcome = parser.result
    assert outcome.recap["prod-1"] == {"ok": 3, "changed": 2, "unreachable": 0, "failed": 1}
    assert outcome.recap["canary-1"]["changed"] == 0
    assert outcome.changed == 2
    host, task, msg = outcome.failures[-1]
    assert (host, task) == ("prod-1", FAIL)
    assert msg == "deploy of abc failed at 'x'"


def test_ignored_failures_are_dropped() -> None:
    parser, _ = run([{"event": "task", "task": "t"},
                     result("failed", "h", "t", msg="boom", ignored=True)])
    assert parser.result.failures == []


def test_command_failure_carries_its_output() -> None:
    parser, _ = run([{"event": "task", "task": "t"},
                     result("failed", "h", "t", msg="non-zero return code", rc=1,
                            stderr="", stdout="error: no such file")])
    assert parser.result.failures[0][2] == "non-zero return code: error: no such file"
