"""The records kept in Redis as JSON, one pydantic model each, shared by the writer and
every reader (keys in ``cdpipe_host.keys``):

- ``SamplesRecord``: one target's last polls (``monitor:samples``, hash by target id);
- ``AlertState``: a pending or firing alert (``monitor:alerts``, hash by alert);
- ``AlertEvent``: a firing or resolved transition (``monitor:alerts:history``);
- ``ScaleEvent`` and ``ScaleStreak``: a scale action (``monitor:scale:events``) and a
  failing streak of them (``monitor:scale:failing``, hash by direction);
- ``VerdictRecord``: the canary judge's latest verdict (``monitor:canary:verdict``);
- ``OutboxMail``: a mail waiting to be sent (``monitor:outbox``);
- ``DeployRecord``: one deploy (``deploy:history``; written by ``cdpipe.deploy_record``).

A writer dumps with ``Record.dumps`` (numbers JSON can hold: NaN and infinities become
null); a reader loads with ``Record.loads``, which gives None for an entry that is not
JSON of the model's shape (readers skip it, never crash), and reads NaN or infinity
where a number may be missing as None. Fields a newer writer adds are ignored.
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Literal, Self

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticSerializationError


def _finite_or_none(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, bool):  # JSON's true is no measure
        return None
    return value


# A measure that may be missing: null, or (as read) NaN and infinity, are None.
Measure = Annotated[float | None, BeforeValidator(_finite_or_none)]


class Record(BaseModel):
    # strict: a number written as a string, or true as a count, is not the model's shape
    model_config = ConfigDict(extra="ignore", strict=True, ser_json_inf_nan="null")

    def dumps(self) -> str:
        try:
            return self.model_dump_json()
        except PydanticSerializationError:  # text pydantic will not write (a lone
            return json.dumps(self.model_dump())  # surrogate): the standard library's

    @classmethod
    def loads(cls, raw: str | bytes | None) -> Self | None:
        if raw is None:
            return None
        try:
            return cls.model_validate_json(raw)
        except ValidationError:
            pass
        try:  # JSON pydantic's parser refuses but Python's reads (a lone surrogate)
            return cls.model_validate(json.loads(raw))
        except (ValueError, ValidationError):
            return None


class SamplesRecord(Record):
    """A target's last polls, oldest first: epoch seconds, CPU and memory percent (None
    where the poll failed or lacked them)."""

    role: str = ""
    ok: bool = False
    error: str = ""
    t: list[Measure]
    cpu: list[Measure]
    mem: list[Measure]

    @model_validator(mode="after")
    def _same_length(self) -> SamplesRecord:
        if not len(self.t) == len(self.cpu) == len(self.mem):
            raise ValueError("t, cpu and mem differ in length")
        return self


class AlertState(Record):
    state: Literal["pending", "firing"]
    count: int
    since: float
    last_sent: float
    summary: str
    clear: int = 0  # consecutive clear polls while firing
    value: Measure = None  # the last value observed (None: not a measure)


class AlertEvent(Record):
    alert: str
    event: Literal["firing", "resolved"]
    at: float
    since: Measure = None
    summary: str = ""
    value: Measure = None


class ScaleEvent(Record):
    at: float
    direction: str  # out | in
    ok: bool
    line: str
    reason: str = ""


class ScaleStreak(Record):
    since: float
    failures: int = Field(ge=0)
    mailed: float
    last: str = ""


class SideRecord(Record):
    """One side's numbers over the judged window: requests, 5xx rate, p95 latency (None
    when no request was timed)."""

    requests: float = 0.0
    error_rate: float = 0.0
    p95_ms: Measure = None


class VerdictRecord(Record):
    at: float
    decided: bool
    failed: bool
    reason: str
    canary: SideRecord = Field(default_factory=SideRecord)
    prod: SideRecord = Field(default_factory=SideRecord)
    commit: str = ""  # the canary's release the window judged ("": it did not say)
    window_start: Measure = None  # when that window began
    # On the latest record only: the last decided verdict (after a failed one the judge
    # starts a new window, whose "no verdict yet" must not hide why).
    last_decided: VerdictRecord | None = None


class OutboxMail(Record):
    id: str
    subject: str
    body: str
    attempts: int = Field(default=0, ge=0)
    next_try: float = 0.0
    queued: float = 0.0
    bad_tries: int = Field(default=0, ge=0)  # tries this message itself made fail


class DeployRecord(Record):
    at: float
    finished: float
    commit: str
    ref: str
    target: str  # the roles, comma-separated
    command: str
    result: Literal["ok", "failed"]
    error: str = ""
    by: str = ""
    instance: str = ""  # a scale-out's new instance
