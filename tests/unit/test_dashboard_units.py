"""The dashboard's pieces that need no server: the operator's sessions, the traffic
rates from HAProxy's counters, which sections a key's change touches, and the hub that
fans sections out to the open pages."""

from __future__ import annotations

import asyncio
import json

import pytest

from cdpipe.dashboard import sessions as sessions_mod
from cdpipe.dashboard.live import QUEUE_FRAMES, Hub, frame, ws_message
from cdpipe.dashboard.sessions import Sessions
from cdpipe.dashboard.traffic import Reading, TrafficMeter
from cdpipe.dashboard.view import SECTIONS, STATE, sections_of
from cdpipe_host.haproxy import ServerStats


def stats(name: str, responses: int, errors: int = 0, status: str = "UP") -> ServerStats:
    return ServerStats(name=name, status=status, weight=100, sessions=0,
                       responses=responses, errors_5xx=errors)


# -- sessions ------------------------------------------------------------------------
def test_only_the_operators_password_opens_a_session() -> None:
    book = Sessions("s3cret")
    assert book.login("wrong") is None
    assert book.login("") is None
    session_id = book.login("s3cret")
    assert session_id is not None and len(session_id) >= 40
    assert book.get(session_id) is not None


def test_no_password_file_means_no_login_at_all() -> None:
    assert Sessions(None).login("") is None
    assert Sessions("").login("") is None


def test_an_action_needs_the_sessions_own_csrf_token() -> None:
    book = Sessions("pw")
    first, second = book.login("pw"), book.login("pw")
    assert first and second
    token = book.get(first).csrf  # type: ignore[union-attr]
    assert book.allows(first, token)
    assert not book.allows(first, None)
    assert not book.allows(first, token + "x")
    assert not book.allows(second, token)  # another session's token
    assert not book.allows(None, token)
    book.logout(first)
    assert not book.allows(first, token)


def test_sessions_expire_when_idle(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(sessions_mod.time, "time", lambda: now[0])
    book = Sessions("pw", idle_seconds=60)
    session_id = book.login("pw")
    now[0] += 59
    assert book.get(session_id) is not None  # and renewed
    now[0] += 59
    assert book.get(session_id) is not None
    now[0] += 61
    assert book.get(session_id) is None


# -- traffic -------------------------------------------------------------------------
ROLES = {"prod-1": "prod", "prod-2": "prod", "canary-1": "canary"}


def test_rates_per_server_and_role_and_the_canarys_real_share() -> None:
    meter = TrafficMeter()
    first = meter.add(Reading(10.0, {"prod-1": stats("prod-1", 100),
                                     "prod-2": stats("prod-2", 50),
                                     "canary-1": stats("canary-1", 40, 2)}), ROLES)
    assert first["rps"] == 0 and first["canary_share"] is None  # one reading: no rate
    out = meter.add(Reading(12.0, {"prod-1": stats("prod-1", 160),
                                   "prod-2": stats("prod-2", 90),
                                   "canary-1": stats("canary-1", 90, 12)}), ROLES)
    rows = {s["id"]: s for s in out["servers"]}
    assert rows["prod-1"]["rps"] == 30.0 and rows["prod-2"]["rps"] == 20.0
    assert rows["canary-1"]["rps"] == 25.0 and rows["canary-1"]["errors_5xx_per_s"] == 5.0
    assert out["roles"]["prod"] == {"rps": 50.0, "errors_5xx_per_s": 0.0}
    assert out["rps"] == 75.0
    assert out["canary_share"] == pytest.approx(33.3, abs=0.05)


def test_a_haproxy_reload_restarts_the_counters_without_negative_rates() -> None:
    meter = TrafficMeter()
    meter.add(Reading(0.0, {"prod-1": stats("prod-1", 5000, 40)}), ROLES)
    out = meter.add(Reading(1.0, {"prod-1": stats("prod-1", 12, 1)}), ROLES)
    assert out["servers"][0]["rps"] == 12.0 and out["servers"][0]["errors_5xx_per_s"] == 1.0


def test_a_new_server_has_no_rate_until_its_second_reading() -> None:
    meter = TrafficMeter()
    meter.add(Reading(0.0, {"prod-1": stats("prod-1", 10)}), ROLES)
    out = meter.add(Reading(1.0, {"prod-1": stats("prod-1", 20),
                                  "prod-9": stats("prod-9", 500)}), ROLES)
    rows = {s["id"]: s for s in out["servers"]}
    assert rows["prod-9"]["rps"] == 0.0 and rows["prod-9"]["role"] == "?"


# -- sections ------------------------------------------------------------------------
@pytest.mark.parametrize(("key", "sections"), [
    ("flag:hiddenfeature", {"flags"}),
    ("canary:alert", {"canary"}),
    ("canary:weight", {"canary"}),
    ("monitor:canary:verdict", {"canary"}),
    ("monitor:samples", {"instances"}),
    ("servers:prod", {"instances", "state"}),
    ("monitor:alerts", {"alerts"}),
    ("monitor:alerts:history", {"alerts"}),
    ("monitor:scale:events", {"scale", "instances", "state"}),
    ("deploy:history", {"deploys", "instances", "canary", "state"}),
    ("lock:environment", {"lock"}),
    ("monitor:outbox", set()),
    ("monitor:scale:last", set()),
])
def test_a_keys_change_names_the_sections_it_touches(key: str, sections: set[str]) -> None:
    assert sections_of(key) == sections
    assert sections - {STATE} <= set(SECTIONS)


# -- hub -----------------------------------------------------------------------------
def test_the_hub_sends_changes_only_and_a_new_page_gets_the_latest_first() -> None:
    async def scenario() -> None:
        hub = Hub()
        page = hub.join()
        assert hub.publish("flags", {"a": "on"})
        assert not hub.publish("flags", {"a": "on"})  # unchanged: not sent again
        assert hub.publish("flags", {"a": "off"})
        assert page.qsize() == 2
        late = hub.join()
        assert late.get_nowait() == ("flags", '{"a":"off"}')
    asyncio.run(scenario())


def test_a_page_that_falls_behind_is_let_go() -> None:
    async def scenario() -> None:
        hub = Hub()
        slow = hub.join()
        for n in range(QUEUE_FRAMES + 1):
            hub.publish("traffic", {"n": n})
        assert slow not in hub.clients
        assert slow.get_nowait() is None  # its stream ends: the page reconnects
    asyncio.run(scenario())


def test_one_message_as_a_server_sent_event_and_as_a_websocket_message() -> None:
    assert frame("flags", '{"a":"on"}') == b'event: flags\ndata: {"a":"on"}\n\n'
    assert json.loads(ws_message("flags", '{"a":"on"}')) == {"event": "flags",
                                                             "data": {"a": "on"}}


# -- the state's reads ------------------------------------------------------------------
class FakeEnvironment:
    """What the dashboard's Source uses of an Environment: a provider name, a state
    with instances, and reread(), counted (aws: one DescribeInstances each)."""

    def __init__(self) -> None:
        from cdpipe.model import Instance
        from cdpipe.state import State

        self.provider = type("P", (), {"name": "aws"})()
        self.state = State(provider="aws", instances=[
            Instance(id="i-1", role="prod", host="10.0.0.1", ports={}, provider="aws")])
        self.rereads = 0

    def reread(self) -> None:
        self.rereads += 1


def test_the_state_is_read_again_once_per_change_that_moves_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Not on the resynchronisations that follow (each would cost a DescribeInstances
    on AWS: the machine suite counts them), and a change that came too soon after the
    last read is read at the next read once the pause is over."""
    from cdpipe.dashboard import source as source_mod
    from cdpipe.dashboard import view

    clock = [1000.0]
    monkeypatch.setattr(source_mod.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(view, "read", lambda r, state, wanted: {})
    env = FakeEnvironment()
    source = source_mod.Source(env)  # type: ignore[arg-type]
    monkeypatch.setattr(source, "client", lambda: None)
    everything = set(SECTIONS)
    clock[0] += 60
    source.read({"instances", STATE})  # a server list changed
    assert env.rereads == 1
    source.read({"deploys", STATE})  # too soon after the last read: not yet...
    assert env.rereads == 1
    clock[0] += source_mod.STATE_MIN_SECONDS["aws"] + 1
    source.read(everything)  # ...but at the next read after the pause
    assert env.rereads == 2
    for _ in range(5):  # resyncs, samples: no change that moves the state
        clock[0] += 10
        source.read(everything)
    assert env.rereads == 2


def test_resynchronisations_never_ask_for_the_state_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from cdpipe.dashboard import live

    monkeypatch.setattr(live, "RESYNC_SECONDS", 0.01)
    asked: list[set[str]] = []

    def read(wanted: set[str]) -> dict[str, object]:
        asked.append(set(wanted))
        return {}

    async def no_traffic() -> None:
        return None

    async def scenario() -> None:
        feed = live.Live(Hub(), lambda: None, read, no_traffic, SECTIONS)
        feed.start()
        feed.mark({"instances", STATE})
        await asyncio.sleep(0.3)
        await feed.stop()

    asyncio.run(scenario())
    assert len(asked) >= 5  # resynchronised many times...
    assert sum(STATE in wanted for wanted in asked) == 1  # ...the state asked for once


def test_a_state_change_put_off_is_read_once_the_pause_is_over(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A deploy's last server-list change and its record come within the pause between
    two reads of the state: the refresher comes back for it then, not at the next
    resynchronisation (10 s away)."""
    from cdpipe.dashboard import live

    monkeypatch.setattr(live, "RESYNC_SECONDS", 100.0)
    asked: list[set[str]] = []
    put_off = [True]

    def read(wanted: set[str]) -> dict[str, object]:
        asked.append(set(wanted))
        return {}

    def stale_in() -> float | None:
        if put_off[0]:
            put_off[0] = False
            return 0.05
        return None

    async def no_traffic() -> None:
        return None

    async def scenario() -> None:
        feed = live.Live(Hub(), lambda: None, read, no_traffic, SECTIONS, stale_in)
        feed.start()
        await asyncio.sleep(0.3)
        await feed.stop()

    asyncio.run(scenario())
    assert len(asked) == 2  # the first read, then the state put off
    assert STATE in asked[1] and {"instances", "canary"} <= asked[1]
