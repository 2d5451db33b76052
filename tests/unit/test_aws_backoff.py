"""The one retry loop of the AWS provider: waits that double up to a cap, progress
before each wait, a one-line error at the limit, other errors at once."""

from __future__ import annotations

import botocore.exceptions
import pytest

from cdpipe.errors import CdpipeError
from cdpipe.providers.aws import backoff as aws_backoff


def refusal(code: str) -> botocore.exceptions.ClientError:
    return botocore.exceptions.ClientError({"Error": {"Code": code, "Message": code}},
                                           "DeleteSecurityGroup")


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    slept: list[float] = []
    monkeypatch.setattr(aws_backoff.time, "sleep", slept.append)
    return slept


def test_waits_double_up_to_the_cap_until_the_call_succeeds(waits: list[float]) -> None:
    answers = iter([refusal("DependencyViolation")] * 5 + ["done"])
    told: list[float] = []

    def call() -> str:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer
    result = aws_backoff.retry_with_backoff(
        call, transient=lambda exc: True, limit=600, waiting=told.append,
        gave_up=lambda: CdpipeError("never"))
    assert result == "done"
    assert waits == told == [2.0, 4.0, 8.0, 15.0, 15.0]


def test_an_error_that_is_not_transient_goes_up_at_once(waits: list[float]) -> None:
    def call() -> None:
        raise refusal("AccessDenied")
    with pytest.raises(botocore.exceptions.ClientError):
        aws_backoff.retry_with_backoff(
            call, transient=lambda exc: False, limit=600, waiting=lambda s: None,
            gave_up=lambda: CdpipeError("never"))
    assert waits == []


def test_past_the_limit_the_callers_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [0.0]
    monkeypatch.setattr(aws_backoff.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(aws_backoff.time, "sleep", lambda s: clock.__setitem__(0, clock[0] + s))

    def call() -> None:
        raise refusal("DependencyViolation")
    with pytest.raises(CdpipeError, match="still in use after 10 s"):
        aws_backoff.retry_with_backoff(
            call, transient=lambda exc: True, limit=10, waiting=lambda s: None,
            gave_up=lambda: CdpipeError("still in use after 10 s"))
    assert clock[0] == 10.0  # 2 + 4 + the 4 s that remained, not a full 8
