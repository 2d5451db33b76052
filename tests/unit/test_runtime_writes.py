"""The operator's writes that the CLI and the dashboard share (cdpipe.controls):
what they accept and the one line that refuses the rest, before Redis is asked. Redis is
a small fake of the calls they make; against a real server: tests/integration/
test_records.py (the CLI) and tests/e2e."""

from __future__ import annotations

import pytest

from cdpipe import controls
from cdpipe.errors import CdpipeError
from cdpipe_host.keys import CANARY_WEIGHT, flag_key


class FakeRedis:
    def __init__(self) -> None:
        self.data: dict[str, str] = {}

    def set(self, key: str, value: str) -> bool:
        self.data[key] = value
        return True

    def delete(self, *keys: str) -> int:
        return sum(self.data.pop(k, None) is not None for k in keys)


@pytest.mark.parametrize(("value", "weight"), [
    ("0", 0), ("33", 33), ("100", 100), (" 7 ", 7), ("007", 7)])
def test_a_canary_weight_is_an_integer_from_0_to_100(value: str, weight: int) -> None:
    assert controls.check_weight(value) == weight


@pytest.mark.parametrize("value", [
    "101", "-1", "1.5", "50%", "", "ten", "1e2", "\uff15\uff10", "1000", "5\n0", "x" * 10_000])
def test_anything_else_is_refused_in_one_line(value: str) -> None:
    with pytest.raises(CdpipeError) as refused:
        controls.check_weight(value)
    message = str(refused.value)
    assert message.startswith("invalid canary weight ")
    assert message.endswith(": use an integer from 0 to 100")
    assert "\n" not in message and len(message) < 200


def test_set_weight_writes_what_it_checked() -> None:
    r = FakeRedis()
    assert controls.set_weight(r, " 25 ") == 25  # type: ignore[arg-type]
    assert r.data == {CANARY_WEIGHT: "25"}
    with pytest.raises(CdpipeError):
        controls.set_weight(r, "200")  # type: ignore[arg-type]
    assert r.data == {CANARY_WEIGHT: "25"}


def test_delete_flag_says_whether_it_existed() -> None:
    r = FakeRedis()
    r.data[flag_key("beta")] = "on"
    assert controls.delete_flag(r, "beta") is True  # type: ignore[arg-type]
    assert controls.delete_flag(r, "beta") is False  # type: ignore[arg-type]
    assert r.data == {}


@pytest.mark.parametrize("name", ["", "a b", "a\nb", "-x", "x" * 65, "flag:*", "*"])
def test_delete_flag_refuses_what_is_no_flag_name(name: str) -> None:
    r = FakeRedis()
    r.data[flag_key("*")] = "kept"
    with pytest.raises(CdpipeError, match=r"^invalid flag name ") as refused:
        controls.delete_flag(r, name)  # type: ignore[arg-type]
    assert "\n" not in str(refused.value)
    assert r.data == {flag_key("*"): "kept"}  # nothing deleted
