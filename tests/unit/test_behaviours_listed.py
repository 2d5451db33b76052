"""tests/BEHAVIOURS.md lists every test function of the suite, and nothing else: a test
removed or renamed shows up here, so no behaviour leaves the suite unnoticed (and a new
test gets its line)."""

from __future__ import annotations

import ast
import re

from cdpipe import PROJECT_ROOT

TESTS = PROJECT_ROOT / "tests"
LISTED = re.compile(r"^- `(tests/[\w/]+\.py::test_\w+)`", re.MULTILINE)


def defined() -> set[str]:
    found = set()
    for path in TESTS.rglob("test_*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        rel = path.relative_to(PROJECT_ROOT).as_posix()
        found |= {f"{rel}::{node.name}" for node in tree.body
                  if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")}
    return found


def listed() -> list[str]:
    return LISTED.findall((TESTS / "BEHAVIOURS.md").read_text(encoding="utf-8"))


def test_every_test_is_listed_once_and_every_listed_test_exists() -> None:
    names = listed()
    assert sorted({n for n in names if names.count(n) > 1}) == []
    assert sorted(defined() - set(names)) == [], "tests without a line in BEHAVIOURS.md"
    assert sorted(set(names) - defined()) == [], "lines of BEHAVIOURS.md without a test"


def test_the_inventory_is_read() -> None:
    """The parser finds the inventory's lines (a check that read none would pass)."""
    assert len(listed()) > 400
    assert "tests/unit/test_behaviours_listed.py::test_the_inventory_is_read" in listed()
