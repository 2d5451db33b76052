from __future__ import annotations

from cdpipe.ansible_runner import OutputParser

SAMPLE = """\
PLAY [Deploy the app, one server at a time.] ***********************************

TASK [app : Ensure the app directories exist.] *********************************
changed: [prod-1] => (item=/x/app)
changed: [prod-1] => (item=/x/app/releases)
ok: [canary-1] => (item=/y/app)

TASK [app : Wait for the new release to answer /healthz.] **********************
FAILED - RETRYING: [prod-1]: Wait for the new release to answer /healthz. (60 retries left).
fatal: [prod-1]: FAILED! => {"attempts": 60, "changed": false, "msg": "Status code was -1"}

TASK [app : Fail with the step that broke.] ************************************
fatal: [prod-1]: FAILED! => {"changed": false, "msg": "deploy of abc failed at 'x'"}

RUNNING HANDLER [proxy : Reload HAProxy.] **************************************
changed: [proxy-1]

PLAY RECAP *********************************************************************
canary-1                   : ok=18   changed=0    unreachable=0    failed=0    skipped=8
prod-1                     : ok=3    changed=2    unreachable=0    failed=1    skipped=0
"""


def run() -> tuple[OutputParser, list[str]]:
    shown: list[str] = []
    parser = OutputParser(shown.append)
    for line in SAMPLE.splitlines():
        parser.feed(line)
    return parser, shown


def test_one_progress_line_per_host_and_task() -> None:
    _, shown = run()
    dirs = [s for s in shown if "directories" in s]
    assert len(dirs) == 2
    assert any("prod-1" in s and "changed" in s for s in dirs)
    assert any("proxy-1" in s and "Reload HAProxy" in s for s in shown)


def test_recap_and_failures_are_parsed() -> None:
    parser, _ = run()
    result = parser.result
    assert result.recap["prod-1"] == {"ok": 3, "changed": 2, "unreachable": 0, "failed": 1}
    assert result.recap["canary-1"]["changed"] == 0
    assert result.changed == 2
    host, task, msg = result.failures[-1]
    assert (host, task) == ("prod-1", "app : Fail with the step that broke.")
    assert msg == "deploy of abc failed at 'x'"


def test_ignored_failures_are_dropped() -> None:
    parser = OutputParser(lambda _: None)
    parser.feed("TASK [t] ***")
    parser.feed('fatal: [h]: FAILED! => {"msg": "boom"}')
    parser.feed("...ignoring")
    assert parser.result.failures == []


def test_command_failure_carries_its_output() -> None:
    parser = OutputParser(lambda _: None)
    parser.feed("TASK [t] ***")
    parser.feed('fatal: [h]: FAILED! => {"msg": "non-zero return code", "rc": 1, '
                '"stderr": "", "stdout": "error: no such file"}')
    assert parser.result.failures[0][2] == "non-zero return code: error: no such file"
