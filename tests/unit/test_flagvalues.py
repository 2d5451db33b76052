from __future__ import annotations

import pytest

from cdpipe_host.flagvalues import InvalidFlagValue, bucket, parse


@pytest.mark.parametrize("raw", ["on", "ON", " true ", "1", "yes", "100%"])
def test_on_words_are_on_for_everyone(raw: str) -> None:
    value = parse(raw)
    assert value.percent == 100
    assert value.enabled_for("f", "anyone") and value.enabled_for("f", None)


@pytest.mark.parametrize("raw", ["off", "False", "0", "no", "0%"])
def test_off_words_are_off_for_everyone(raw: str) -> None:
    assert not parse(raw).enabled_for("f", "anyone")


@pytest.mark.parametrize("raw", ["maybe", "150%", "-1%", "%", "abc%", "", "on off"])
def test_invalid_values_are_refused(raw: str) -> None:
    with pytest.raises(InvalidFlagValue):
        parse(raw)


def test_percentage_is_stable_and_close_to_its_share() -> None:
    value = parse("10%")
    users = [f"user-{n}" for n in range(20_000)]
    first = [value.enabled_for("hiddenfeature", u) for u in users]
    again = [value.enabled_for("hiddenfeature", u) for u in users]
    assert first == again
    share = sum(first) / len(users)
    assert 0.09 < share < 0.11


def test_buckets_of_different_flags_are_independent() -> None:
    users = [f"user-{n}" for n in range(20_000)]
    a = {u for u in users if bucket("flag-a", u) < 5000}
    b = {u for u in users if bucket("flag-b", u) < 5000}
    overlap = len(a & b) / len(users)
    assert 0.23 < overlap < 0.27  # independent halves overlap on about a quarter
