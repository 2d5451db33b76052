"""Monitor pieces without servers: configuration, parsing, the canary judge."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from app.metrics import LATENCY_BUCKETS
from monitoring.canary_judge import Judge, Traffic, delta, quantile, release
from monitoring.config import CanaryJudge, ConfigError, load
from monitoring.scrape import Sample, parse

GOOD = """\
interval_seconds: 90
rules:
  - {name: cpu, metric: cpu_percent, role: prod, upper: 80, lower: 10, for: 3, scale: true}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "monitor.yml"
    path.write_text(text)
    return path


def test_good_configuration_loads(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, GOOD), interval=1)
    assert cfg.interval_seconds == 1
    assert cfg.rules[0].for_polls == 3 and cfg.rules[0].scale
    assert cfg.rules[0].clear_polls == 3  # keep_firing_for defaults to `for`
    explicit = load(write(tmp_path, GOOD.replace("for: 3", "for: 3, keep_firing_for: 5")))
    assert explicit.rules[0].clear_polls == 5


@pytest.mark.parametrize(("text", "message"), [
    ("rules:\n  - {name: x, metric: disk_percent, role: prod, upper: 80}",
     "invalid monitor configuration at rules.0.metric"),
    ("rules:\n  - {name: x, metric: cpu_percent, role: prod, upper: 20, lower: 50}",
     "lower (50.0) must be below upper (20.0)"),
    ("rules:\n  - {name: x, metric: cpu_percent, role: proxy, upper: 80, scale: true}",
     "only an avg rule on role prod can scale"),
    ("rules:\n  - {name: x, metric: cpu_percent, role: prod, upper: 80, keep_firing_for: 0}",
     "invalid monitor configuration at rules.0.keep_firing_for"),
    ("interval_seconds: 0.5", "interval_seconds"),
    ("rules: [", "not valid YAML at line 1, column 9"),
])
def test_bad_configuration_is_one_clear_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")) as exc:
        load(write(tmp_path, text))
    assert "\n" not in str(exc.value)


def test_a_scaling_rule_whose_bounds_would_oscillate_is_refused(tmp_path: Path) -> None:
    """40 / 30: two instances at 41% scale out to three at 27.3%, below 30, which scales
    back in to two at 41%, and so on. A lower bound of at most half the upper one cannot
    do that (one instance more at most halves the average); an alert rule has no such
    loop and keeps its bounds."""
    rule = "rules:\n  - {name: x, metric: cpu_percent, role: prod, upper: 40, lower: %s%s}"
    with pytest.raises(ConfigError, match=r"rule x: lower \(30\) must be at most half of "
                                          r"upper \(40\) on a scaling rule") as exc:
        load(write(tmp_path, rule % (30, ", scale: true")))
    assert "\n" not in str(exc.value)
    assert load(write(tmp_path, rule % (20, ", scale: true"))).rules[0].lower == 20
    assert load(write(tmp_path, rule % (30, ""))).rules[0].lower == 30


def test_monitor_refuses_bad_rules_at_start(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yml"
    rules.write_text("rules:\n  - {name: x, metric: cpu_percent, role: prod, upper: 5, "
                     "lower: 50}\n")
    out = subprocess.run([sys.executable, "-m", "monitoring.monitor", str(write(tmp_path, "")),
                          "--rules", str(rules), "--check"],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "lower (50.0) must be below upper (5.0)" in out.stderr


def test_parse_reads_gauges_and_labelled_series() -> None:
    sample = Sample("prod-1", "prod", ok=True)
    parse("# HELP x\ninstance_cpu_percent 12.5\nprocess_cpu_seconds_total 3\n"
          'app_requests_total{route="/",status="500"} 4.0\n'
          'app_request_duration_seconds_bucket{le="0.1",route="/"} 7.0\n', sample)
    assert sample.gauges == {"instance_cpu_percent": 12.5}
    assert ("app_requests_total", {"route": "/", "status": "500"}, 4.0) in sample.series
    assert len(sample.series) == 2


def test_parse_keeps_a_series_whose_label_value_holds_a_brace() -> None:
    """A route label with `}` in it (a client can ask for any path): the line is read,
    not dropped, and the other series stay readable."""
    sample = Sample("prod-1", "prod", ok=True)
    parse('app_requests_total{route="/a}b",status="404"} 2\n'
          'app_requests_total{route="/",status="200"} 9\n', sample)
    assert sample.series == [
        ("app_requests_total", {"route": "/a}b", "status": "404"}, 2.0),
        ("app_requests_total", {"route": "/", "status": "200"}, 9.0)]


def test_parse_refuses_text_that_is_not_an_exposition() -> None:
    with pytest.raises(ValueError):
        parse('app_requests_total{route="/" 3\n', Sample("prod-1", "prod", ok=True))


def traffic(target: str, role: str, total: float, errors: float, slow: float = 0) -> Sample:
    s = Sample(target, role, ok=True)
    s.series = [
        ("app_requests_total", {"route": "/", "status": "200"}, total - errors),
        ("app_requests_total", {"route": "/", "status": "500"}, errors),
        ("app_requests_total", {"route": "/healthz", "status": "500"}, 1000.0),
        ("app_request_duration_seconds_bucket", {"route": "/", "le": "0.01"}, total - slow),
        ("app_request_duration_seconds_bucket", {"route": "/", "le": "1.0"}, total),
        ("app_request_duration_seconds_bucket", {"route": "/", "le": "+Inf"}, total),
    ]
    return s


def test_judge_needs_enough_traffic_then_fails_a_bad_canary() -> None:
    judge = Judge(CanaryJudge(min_requests=20))
    assert not judge.observe([traffic("p", "prod", 0, 0), traffic("c", "canary", 0, 0)]).decided
    few = judge.observe([traffic("p", "prod", 100, 0), traffic("c", "canary", 5, 2)])
    assert not few.decided and "no verdict yet" in few.reason
    bad = judge.observe([traffic("p", "prod", 200, 1), traffic("c", "canary", 50, 15)])
    assert bad.decided and bad.failed and "5xx rate" in bad.reason


def test_judge_passes_a_good_canary_and_catches_a_slow_one() -> None:
    judge = Judge(CanaryJudge(min_requests=20))
    judge.observe([traffic("p", "prod", 0, 0), traffic("c", "canary", 0, 0)])
    good = judge.observe([traffic("p", "prod", 100, 1), traffic("c", "canary", 50, 0)])
    assert good.decided and not good.failed
    judge = Judge(CanaryJudge(min_requests=20))
    judge.observe([traffic("p", "prod", 0, 0), traffic("c", "canary", 0, 0)])
    slow = judge.observe([traffic("p", "prod", 100, 0), traffic("c", "canary", 50, 0, slow=10)])
    assert slow.failed and "p95" in slow.reason


def test_a_verdict_carries_the_numbers_of_both_sides_as_json() -> None:
    judge = Judge(CanaryJudge(min_requests=20))
    judge.observe([traffic("p", "prod", 0, 0), traffic("c", "canary", 0, 0)])
    bad = judge.observe([traffic("p", "prod", 100, 1), traffic("c", "canary", 50, 15)])
    record = json.loads(bad.record(at=1000.0).dumps())
    # p95 of requests all under 10 ms: 95% of the way up the bucket (0, 10 ms].
    assert [record[side].pop("p95_ms") for side in ("canary", "prod")] == [
        pytest.approx(9.5), pytest.approx(9.5)]
    assert record == {
        "at": 1000.0, "decided": True, "failed": True, "reason": bad.reason,
        "canary": {"requests": 50.0, "error_rate": 0.3},
        "prod": {"requests": 100.0, "error_rate": 0.01},
        "last_decided": None, "commit": "", "window_start": bad.window_start}
    assert bad.window_start is not None
    # A p95 beyond the largest finite bucket is that bound (as histogram_quantile
    # says); no timed request is null.
    judge = Judge(CanaryJudge(min_requests=20))
    judge.observe([traffic("p", "prod", 0, 0), _beyond("c", 0)])
    verdict = judge.observe([traffic("p", "prod", 0, 0), _beyond("c", 50)])
    record = json.loads(verdict.record(at=1.0).dumps())
    assert not record["decided"]
    assert record["canary"] == {"requests": 50.0, "error_rate": 0.0, "p95_ms": 1000.0}
    assert record["prod"] == {"requests": 0.0, "error_rate": 0.0, "p95_ms": None}


def _beyond(target: str, total: float) -> Sample:
    """A canary whose every request took longer than the largest finite bucket."""
    s = Sample(target, "canary", ok=True)
    s.series = [("app_requests_total", {"route": "/", "status": "200"}, total),
                ("app_request_duration_seconds_bucket", {"route": "/", "le": "1.0"}, 0.0),
                ("app_request_duration_seconds_bucket", {"route": "/", "le": "+Inf"}, total)]
    return s


# -- the judge's defects (issue 22), each with the case that showed it -----------------
def served(target: str, role: str, requests: float, errors: float = 0,
           latency_ms: float = 20.0, commit: str = "aaa") -> Sample:
    """An app's counters as its /metrics says them: ``requests`` in all, ``errors`` of
    them 5xx, every one taking ``latency_ms``, in the app's own buckets; its release."""
    s = Sample(target, role, ok=True)
    s.series = [("app_release_info", {"commit": commit}, 1.0),
                ("app_requests_total", {"route": "/", "status": "200"}, requests - errors),
                ("app_requests_total", {"route": "/", "status": "500"}, errors)]
    for le in (*LATENCY_BUCKETS, float("inf")):
        bound = "+Inf" if le == float("inf") else repr(le)
        s.series.append(("app_request_duration_seconds_bucket", {"route": "/", "le": bound},
                         requests if latency_ms / 1000 <= le else 0.0))
    return s


def test_the_release_is_read_from_the_apps_own_metrics() -> None:
    """The commit the app says it serves, through the monitor's parser (which keeps
    only the series it reads: app_release_info among them)."""
    from app import create_app

    app = create_app({"TESTING": True, "APP_VERSION": "c0ffee" * 6 + "abcd"})
    sample = Sample("c", "canary", ok=True)
    parse(app.test_client().get("/metrics").get_data(as_text=True), sample)
    assert release(sample) == "c0ffee" * 6 + "abcd"
    assert release(Sample("c", "canary", ok=True)) == ""


def test_a_canary_deploy_starts_a_new_window_and_the_verdict_names_its_commit() -> None:
    """4 healthy polls of release A, then 1 poll of release B failing 25%: averaged
    over 5 polls that was 5.0% against a 5% margin, a pass. The window now begins at
    B's first poll, so B alone is judged, and fails; the verdict names B."""
    judge = Judge(CanaryJudge(min_requests=20))
    prod = canary = 0
    for at in range(5):
        prod, canary = prod + 100, canary + 20
        judge.observe([served("p", "prod", prod), served("c", "canary", canary)],
                      now=float(at))
    healthy = judge.observe([served("p", "prod", prod + 100),
                             served("c", "canary", canary + 20)], now=5.0)
    assert healthy.decided and not healthy.failed and healthy.commit == "aaa"
    b = judge.observe([served("p", "prod", prod + 200),
                       served("c", "canary", 20, errors=5, commit="bbb")], now=6.0)
    assert (b.decided, b.failed, b.commit, b.window_start) == (True, True, "bbb", 6.0)
    assert b.canary.requests == 20 and b.canary.error_rate == 0.25


def test_p95_is_interpolated_within_the_apps_buckets() -> None:
    """Prod at 99 ms and the canary at 101 ms is no regression (it was 100 vs 250 ms,
    the buckets' bounds); +200 ms on a prod p95 of 260 ms is one (it was 500 vs 500)."""
    def judged(prod_ms: float, canary_ms: float) -> tuple[bool, bool]:
        judge = Judge(CanaryJudge(min_requests=20))
        judge.observe([served("p", "prod", 0), served("c", "canary", 0)], now=0.0)
        v = judge.observe([served("p", "prod", 100, latency_ms=prod_ms),
                           served("c", "canary", 50, latency_ms=canary_ms)], now=1.0)
        return v.decided, v.failed
    assert judged(99, 101) == (True, False)
    assert judged(260, 460) == (True, True)
    # histogram_quantile's own arithmetic: halfway up a bucket of 100 between 0.1 and 0.2.
    assert quantile(0.5, {0.1: 0.0, 0.2: 100.0, float("inf"): 100.0}) == pytest.approx(0.15)
    assert quantile(0.95, {0.1: 10.0, float("inf"): 100.0}) == 0.1  # beyond: the bound
    assert quantile(0.95, {float("inf"): 0.0}) == 0.0


def test_a_counter_that_went_back_is_a_restart_and_errors_are_clamped() -> None:
    """A rolled-back canary: its requests went on (120 > 100) but its errors went back
    (5 < 80): the delta was -75 errors, masking real errors for a whole window. Any
    counter that went back means a restart (the counts since it are the delta), and
    errors stay between 0 and the requests."""
    before = Traffic(100.0, 80.0, {0.1: 100.0, float("inf"): 100.0})
    now = Traffic(120.0, 5.0, {0.1: 120.0, float("inf"): 120.0})
    d = delta(now, before)
    assert (d.requests, d.errors) == (120.0, 5.0)
    odd = delta(Traffic(110.0, 95.0, {}), Traffic(100.0, 80.0, {}))  # 15 errors of 10
    assert (odd.requests, odd.errors) == (10.0, 10.0)


def test_prod_and_canary_both_failing_is_inconclusive_not_healthy() -> None:
    judge = Judge(CanaryJudge(min_requests=20))
    judge.observe([served("p", "prod", 0), served("c", "canary", 0)], now=0.0)
    both = judge.observe([served("p", "prod", 100, errors=25),
                          served("c", "canary", 40, errors=10)], now=1.0)
    assert not both.decided and both.reason.startswith("inconclusive: prod unhealthy")
    judge = Judge(CanaryJudge(min_requests=20))
    judge.observe([served("p", "prod", 0), served("c", "canary", 0)], now=0.0)
    slow = judge.observe([served("p", "prod", 100, latency_ms=1400),
                          served("c", "canary", 40, latency_ms=1450)], now=1.0)
    assert not slow.decided and "prod unhealthy" in slow.reason
    # A canary beyond the ceiling fails even when within the margin of prod's rate.
    judge = Judge(CanaryJudge(min_requests=20, error_rate_margin=0.1))
    judge.observe([served("p", "prod", 0), served("c", "canary", 0)], now=0.0)
    over = judge.observe([served("p", "prod", 100, errors=4),
                          served("c", "canary", 100, errors=12)], now=1.0)
    assert over.failed and "above the ceiling" in over.reason


def test_a_window_in_seconds_decides_at_short_intervals() -> None:
    """1-second polls of a quiet service (~3.4 requests a poll): five polls held 17
    requests against a minimum of 20, so a window of 5 polls never decided; a window
    of seconds holds every poll of its span and decides."""
    judge = Judge(CanaryJudge(min_requests=20, window_seconds=60))
    verdicts = []
    for at in range(12):
        verdicts.append(judge.observe([served("p", "prod", 3.4 * at),
                                       served("c", "canary", 3.4 * at)], now=float(at)))
    assert not verdicts[5].decided  # 17 requests each
    assert verdicts[-1].decided and not verdicts[-1].failed
    # Polls older than the window leave it.
    late = judge.observe([served("p", "prod", 3.4 * 12), served("c", "canary", 3.4 * 12)],
                         now=200.0)
    assert not late.decided and late.canary.requests == pytest.approx(3.4)
