"""The scaler's sudo rule and the bound on --max: the monitor's user may run the scale
command only as `out` or `in` with a --max from 1 to SCALE_MAX_LIMIT (or --help), and
neither the CLI nor the monitor's settings take a larger maximum."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import jinja2
import pytest
from pydantic import ValidationError

from cdpipe import PROJECT_ROOT
from cdpipe.dashboard.actor import ACTIONS
from cdpipe.dashboard.actor import main as actor_main
from devkit.roles import role_defaults
from monitoring.config import SCALE_MAX_LIMIT, Scaling

SCALER = PROJECT_ROOT / "roles" / "scaler"


def rules(dashboard: bool = True) -> list[str]:
    """The sudo rule's lines, as the role renders them."""
    defaults = role_defaults("scaler")
    source = (SCALER / "templates" / "sudoers.j2").read_text()
    jinja = jinja2.Environment(undefined=jinja2.StrictUndefined)
    jinja.filters["bool"] = bool  # Ansible's
    text = jinja.from_string(source).render(
        scaler_caller="cdpipe", scaler_user="cdpipe-scaler", scaler_dir="/opt/cdpipe/scaler",
        scaler_scale_max_limit=defaults["scaler_scale_max_limit"],
        scaler_dashboard_enabled=dashboard, scaler_dashboard_user="cdpipe-dashboard")
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def rule_pattern() -> re.Pattern[str]:
    """The arguments' regular expression of the scale command's rule."""
    rule = rules()[0]
    assert rule.startswith("cdpipe ALL=(cdpipe-scaler) NOPASSWD: /opt/cdpipe/scaler/scale ^")
    return re.compile(rule.split(" /opt/cdpipe/scaler/scale ", 1)[1])


def dashboard_rule_pattern() -> re.Pattern[str]:
    """The arguments' regular expression of the dashboard's rule (its actor)."""
    rule = rules()[1]
    assert rule.startswith("cdpipe-dashboard ALL=(cdpipe-scaler) NOPASSWD: "
                           "/opt/cdpipe/scaler/dashboard-act ^")
    return re.compile(rule.split(" /opt/cdpipe/scaler/dashboard-act ", 1)[1])


def test_the_role_and_the_python_side_bound_max_alike() -> None:
    defaults = role_defaults("scaler")
    assert defaults["scaler_scale_max_limit"] == SCALE_MAX_LIMIT


@pytest.mark.parametrize(("args", "allowed"), [
    ("out --max 4", True), ("in --max 4", True), ("out --max 1", True),
    (f"out --max {SCALE_MAX_LIMIT}", True), ("--help", True),
    (f"out --max {SCALE_MAX_LIMIT + 1}", False), ("out --max 0", False),
    ("out --max 04", False), ("out --max 4 --other", False), ("out", False),
    ("status", False), ("down", False), ("out --max 4\nid", False), ("", False)])
def test_the_sudo_rule_takes_only_bounded_out_or_in(args: str, allowed: bool) -> None:
    assert bool(rule_pattern().fullmatch(args)) == allowed


def test_neither_the_cli_nor_the_monitor_takes_a_larger_max(tmp_path: Path) -> None:
    out = subprocess.run([str(Path(sys.executable).parent / "cdpipe"), "scale", "out", "--max",
                          str(SCALE_MAX_LIMIT + 1)], capture_output=True, text=True,
                         timeout=60, check=False, cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip() == (
        f"error: Invalid value for '--max': Input should be less than or equal to "
        f"{SCALE_MAX_LIMIT} (see `cdpipe scale out --help`)")
    with pytest.raises(ValidationError):
        Scaling(max_count=SCALE_MAX_LIMIT + 1)


@pytest.mark.parametrize(("args", "allowed"), [
    ("state", True), ("canary promote", True), ("canary rollback", True),
    ("canary deploy", False), ("scale out --max 4", False), ("state --json", False),
    ("canary promote\nid", False), ("down", False), ("", False)])
def test_the_dashboards_rule_takes_only_its_actors_three_commands(args: str,
                                                                 allowed: bool) -> None:
    """The page's user may run its actor as the scaler for the state, promote and
    rollback only; the actor refuses anything else too (exit 2), and its list is the
    rule's. Without the dashboard, no rule for it."""
    assert bool(dashboard_rule_pattern().fullmatch(args)) == allowed
    assert (tuple(args.split(" ")) in ACTIONS) == allowed
    if not allowed:
        assert actor_main(args.split(" ")) == 2
    assert len(rules(dashboard=False)) == 1
