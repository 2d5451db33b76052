"""How the EC2 provider reads facts back from tags: the commit of a role whose instances
disagree, and `cdpipe up`'s options from their tag text (no AWS needed)."""

from __future__ import annotations

import pytest

from cdpipe.config import Settings
from cdpipe.errors import CdpipeError
from cdpipe.providers.aws.provider import Ec2Provider
from cdpipe.providers.aws.tag_records import TAG_VALUE_LIMIT, majority_commit, option_value

A, B, C = "a" * 40, "b" * 40, "c" * 40


@pytest.mark.parametrize(("commits", "expected"), [
    ([A], A),
    ([A, A, B], A),          # most of them
    ([B, A, A], A),
    ([A, B], B),             # a tie: the newest launch's
    ([B, A], A),
    ([A, B, C, C, B], B),    # B and C tie; B's instance was launched last
])
def test_the_commit_most_run_wins_and_a_tie_goes_to_the_newest(
        commits: list[str], expected: str) -> None:
    assert majority_commit(commits) == expected


@pytest.mark.parametrize("value", [90.0, 5.5, 300, 0, -1, "/etc/cdpipe/rules.yml",
                                   "text", "1.2.3"])
def test_options_come_back_from_their_tag_text_with_their_type(
        value: str | float | int) -> None:
    back = option_value(str(value))
    assert back == value and type(back) is type(value)


def test_an_option_too_long_for_a_tag_is_one_line() -> None:
    provider = Ec2Provider(Settings(aws_region="us-east-1"))
    provider.check_options({"monitor_rules_file": "/" + "x" * (TAG_VALUE_LIMIT - 1)})
    with pytest.raises(CdpipeError) as refused:
        provider.check_options({"monitor_rules_file": "/" + "x" * TAG_VALUE_LIMIT})
    assert "\n" not in str(refused.value)
    assert "cdpipe:option:monitor_rules_file" in str(refused.value)
