from __future__ import annotations

import logging

import pytest

from cdpipe_host.proxy.desired import haproxy_weights
from cdpipe_host.values import read_alert, read_weight


@pytest.mark.parametrize(("percent", "prod", "canary"),
                         [(33, 1, 1), (5, 1, 1), (50, 1, 1), (10, 3, 1), (33, 7, 1), (20, 2, 2)])
def test_weights_give_the_canary_its_share_whatever_the_prod_count(
        percent: int, prod: int, canary: int) -> None:
    prod_w, canary_w = haproxy_weights(percent, prod, canary)
    assert 0 <= prod_w <= 256 and 0 <= canary_w <= 256
    share = canary * canary_w / (canary * canary_w + prod * prod_w)
    assert abs(share - percent / 100) < 0.005


def test_edge_weights() -> None:
    assert haproxy_weights(0, 2, 1) == (256, 0)
    assert haproxy_weights(100, 2, 1) == (0, 256)
    assert haproxy_weights(33, 1, 0) == (1, 0)
    assert haproxy_weights(33, 0, 1) == (0, 1)


@pytest.mark.parametrize(("raw", "on"), [(None, False), ("on", True), ("OFF", False),
                                         ("yes", True), ("0", False)])
def test_alert_values(raw: str | None, on: bool) -> None:
    assert read_alert(raw) is on


def test_invalid_alert_is_on_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert read_alert("maybe") is True
    assert "canary:alert" in caplog.text and "maybe" in caplog.text


@pytest.mark.parametrize(("raw", "weight"), [(None, 33), ("10", 10), (" 50 ", 50),
                                             ("0", 0), ("100", 100), ("150", 33),
                                             ("-1", 33), ("ten", 33)])
def test_weight_values(raw: str | None, weight: int) -> None:
    assert read_weight(raw) == weight
