"""The drain guard of the discovery service (cdpipe_host.discovery): draining a server
is refused when nothing would be left taking traffic, the canary counting for nothing
while canary:alert is on. serving_after is the rule as a pure function; deregister is
the rule applied to Redis (here a small in-memory fake of the calls it makes)."""

from __future__ import annotations

from typing import Any

import pytest

from cdpipe_host.discovery import DrainRefused, deregister, register, serving_after
from cdpipe_host.keys import CANARY_ALERT, servers_key


@pytest.mark.parametrize(("counts", "alert", "role", "left"), [
    # prod drained, canary alert on, 1 prod: nothing left -> refused
    ({"prod": 1, "canary": 1}, True, "prod", 0),
    # the same with the alert off: the canary still serves
    ({"prod": 1, "canary": 1}, False, "prod", 1),
    # two prod servers: one stays, whatever the alert
    ({"prod": 2, "canary": 1}, True, "prod", 1),
    ({"prod": 2, "canary": 1}, False, "prod", 2),
    # the last canary drained: prod serves
    ({"prod": 1, "canary": 1}, False, "canary", 1),
    ({"prod": 1, "canary": 1}, True, "canary", 1),
    # the last canary while prod is empty: nothing left
    ({"prod": 0, "canary": 1}, False, "canary", 0),
    # only prod, no canary in the list at all
    ({"prod": 1}, False, "prod", 0),
    ({"prod": 3}, True, "prod", 2),
    # the canary list is not even read while the alert is on
    ({"prod": 1, "canary": 5}, True, "prod", 0),
])
def test_serving_after(counts: dict[str, int], alert: bool, role: str, left: int) -> None:
    assert serving_after(counts, alert, role) == left


class FakePipeline:
    def __init__(self, r: FakeRedis) -> None:
        self.r = r
        self.queued: list[tuple[str, tuple[Any, ...]]] = []

    def hlen(self, key: str) -> FakePipeline:
        self.queued.append(("hlen", (key,)))
        return self

    def get(self, key: str) -> FakePipeline:
        self.queued.append(("get", (key,)))
        return self

    def execute(self) -> list[Any]:
        return [getattr(self.r, name)(*args) for name, args in self.queued]


class FakeRedis:
    """The redis-py calls discovery makes, decoded replies, over dicts."""

    def __init__(self, servers: dict[str, dict[str, str]], alert: str | None = None) -> None:
        self.hashes = {servers_key(role): dict(entries) for role, entries in servers.items()}
        self.strings = {} if alert is None else {CANARY_ALERT: alert}

    def hget(self, key: str, field: str) -> str | None:
        return self.hashes.get(key, {}).get(field)

    def hset(self, key: str, field: str, value: str) -> int:
        self.hashes.setdefault(key, {})[field] = value
        return 1

    def hlen(self, key: str) -> int:
        return len(self.hashes.get(key, {}))

    def hdel(self, key: str, field: str) -> int:
        return 0 if self.hashes.get(key, {}).pop(field, None) is None else 1

    def get(self, key: str) -> str | None:
        return self.strings.get(key)

    def pipeline(self, transaction: bool = True) -> FakePipeline:
        return FakePipeline(self)


ONE_EACH = {"prod": {"prod-1": "10.0.0.1:8000"}, "canary": {"canary-1": "10.0.0.2:8000"}}


def test_draining_the_last_prod_with_the_canary_alert_on_is_refused() -> None:
    r = FakeRedis(ONE_EACH, alert="on")
    with pytest.raises(DrainRefused, match=r"draining prod-1 would leave no server in "
                                           r"rotation \(canary:alert is on\)"):
        deregister(r, "prod", "prod-1")  # type: ignore[arg-type]
    assert r.hashes[servers_key("prod")] == {"prod-1": "10.0.0.1:8000"}  # untouched


def test_an_invalid_alert_reads_as_on_and_refuses(caplog: pytest.LogCaptureFixture) -> None:
    r = FakeRedis(ONE_EACH, alert="maybe")
    with pytest.raises(DrainRefused):
        deregister(r, "prod", "prod-1")  # type: ignore[arg-type]
    assert "invalid value 'maybe' for canary:alert" in caplog.text


@pytest.mark.parametrize(("alert", "role", "instance_id"), [
    ("off", "prod", "prod-1"),    # the canary serves meanwhile
    (None, "prod", "prod-1"),     # no alert key: off
    ("on", "canary", "canary-1"), # prod serves
    ("OFF", "canary", "canary-1"),
])
def test_a_drain_that_leaves_a_server_removes_the_entry(
        alert: str | None, role: str, instance_id: str) -> None:
    r = FakeRedis(ONE_EACH, alert=alert)
    assert deregister(r, role, instance_id) is True  # type: ignore[arg-type]
    assert r.hashes[servers_key(role)] == {}
    other = "canary" if role == "prod" else "prod"
    assert r.hashes[servers_key(other)] == ONE_EACH[other]


def test_a_second_prod_server_can_go_while_the_alert_is_on() -> None:
    r = FakeRedis({"prod": {"prod-1": "a:1", "prod-2": "b:1"},
                   "canary": {"canary-1": "c:1"}}, alert="on")
    assert deregister(r, "prod", "prod-2") is True  # type: ignore[arg-type]
    with pytest.raises(DrainRefused):
        deregister(r, "prod", "prod-1")  # type: ignore[arg-type]
    assert r.hashes[servers_key("prod")] == {"prod-1": "a:1"}


def test_an_unknown_server_is_not_there_to_drain() -> None:
    # Even where draining a real one would be refused: nothing changes, nothing refused.
    r = FakeRedis({"prod": {"prod-1": "a:1"}}, alert="on")
    assert deregister(r, "prod", "prod-9") is False  # type: ignore[arg-type]
    assert r.hashes[servers_key("prod")] == {"prod-1": "a:1"}


def test_register_writes_once() -> None:
    r = FakeRedis({})
    assert register(r, "prod", "prod-2", "10.0.0.3:8000") is True  # type: ignore[arg-type]
    assert register(r, "prod", "prod-2", "10.0.0.3:8000") is False  # type: ignore[arg-type]
    assert register(r, "prod", "prod-2", "10.0.0.4:8000") is True  # type: ignore[arg-type]
    assert r.hashes[servers_key("prod")] == {"prod-2": "10.0.0.4:8000"}
