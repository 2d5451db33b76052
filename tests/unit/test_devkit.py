"""devkit is what tests and benchmarks share; bench imports it, never tests."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

import devkit
import devkit.ports
import tests.support
from cdpipe import PROJECT_ROOT

SHARED = ["cdpipe_env", "commit_change", "free_port", "free_port_block", "git", "git_init",
          "make_scratch_repo"]


def test_each_test_helper_has_one_home() -> None:
    """What tests share with the benchmarks is devkit's, imported from there; the tests'
    own helpers are in tests/support.py, which re-exports nothing of devkit."""
    assert sorted(devkit.__all__) == SHARED
    assert [name for name in SHARED if hasattr(tests.support, name)] == []
    helpers = sorted(p.name for p in (PROJECT_ROOT / "tests").glob("*.py"))
    assert helpers == ["__init__.py", "conftest.py", "iam_eval.py", "support.py",
                       "xdist_groups.py"], helpers


def test_bench_and_devkit_import_nothing_of_tests() -> None:
    for package in ("bench", "devkit"):
        for path in sorted((PROJECT_ROOT / package).glob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                assert not any(n == "tests" or n.startswith("tests.") for n in names), (
                    f"{path.relative_to(PROJECT_ROOT)} imports {names}")
    # Nor indirectly: every bench module imported, no module of tests is loaded.
    modules = [f"bench.{p.stem}" for p in sorted((PROJECT_ROOT / "bench").glob("*.py"))]
    code = (f"import importlib, sys\nfor m in {modules!r}: importlib.import_module(m)\n"
            "print(sorted(m for m in sys.modules if m == 'tests' or m.startswith('tests.')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True,
                         text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"



def test_two_test_workers_look_for_port_blocks_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two xdist workers bringing up environments at the same moment must not pick the
    same free block (nothing listens on it yet): each looks from its own offset."""
    blocks = {}
    for worker in ("gw0", "gw1"):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
        blocks[worker] = devkit.free_port_block(100)
    assert blocks["gw1"] - blocks["gw0"] >= 100
    assert blocks["gw1"] >= 20000 + devkit.ports.WORKER_SPAN
