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
import yaml
from pydantic import ValidationError

from cdpipe import PROJECT_ROOT
from monitoring.config import SCALE_MAX_LIMIT, Scaling

SCALER = PROJECT_ROOT / "roles" / "scaler"


def rule_pattern() -> re.Pattern[str]:
    """The arguments' regular expression of the sudo rule, as the role renders it."""
    defaults = yaml.safe_load((SCALER / "defaults" / "main.yml").read_text())
    source = (SCALER / "templates" / "sudoers.j2").read_text()
    text = jinja2.Environment(undefined=jinja2.StrictUndefined).from_string(source).render(
        scaler_caller="cdpipe", scaler_user="cdpipe-scaler", scaler_dir="/opt/cdpipe/scaler",
        scaler_scale_max_limit=defaults["scaler_scale_max_limit"])
    rule = next(line for line in text.splitlines() if line and not line.startswith("#"))
    assert rule.startswith("cdpipe ALL=(cdpipe-scaler) NOPASSWD: /opt/cdpipe/scaler/scale ^")
    return re.compile(rule.split(" /opt/cdpipe/scaler/scale ", 1)[1])


def test_the_role_and_the_python_side_bound_max_alike() -> None:
    defaults = yaml.safe_load((SCALER / "defaults" / "main.yml").read_text())
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
