"""The code role on this machine, through ansible-playbook: a package is shipped once,
read back by its fingerprint after, shipped again when a file changes, and unpacked as
the user that unpacks, never with the control machine's owner ids."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cdpipe import PROJECT_ROOT

FOREIGN_ID = 4242  # an id a local user of the machine could happen to have


def converge(tmp_path: Path) -> dict[str, int]:
    """Runs the code role on localhost; the recap's counts."""
    playbook = tmp_path / "code.yml"
    playbook.write_text(yaml.safe_dump([{
        "hosts": "localhost", "gather_facts": False,
        "roles": [{"role": "code", "code_dir": str(tmp_path / "dest"),
                   "code_packages": ["pkg"], "code_build_venv": False,
                   "code_project_dir": str(tmp_path / "project")}]}]))
    out = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", "-c",
         "local", "-e", f"ansible_python_interpreter={sys.executable}", str(playbook)],
        env=dict(os.environ, ANSIBLE_CONFIG=str(PROJECT_ROOT / "ansible.cfg"),
                 ANSIBLE_STDOUT_CALLBACK="json", TMPDIR=str(tmp_path)),
        capture_output=True, text=True, timeout=180, check=False)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    stats: dict[str, int] = json.loads(out.stdout)["stats"]["localhost"]
    return stats


@pytest.mark.skipif(os.geteuid() != 0, reason="owner ids are only kept when root unpacks")
def test_a_package_ships_once_as_roots_and_again_when_a_file_changes(tmp_path: Path) -> None:
    package = tmp_path / "project" / "pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("VALUE = 1\n")
    (package / "requirements.txt").write_text("")
    for path in (package, *package.iterdir()):
        os.chown(path, FOREIGN_ID, FOREIGN_ID)

    assert converge(tmp_path)["changed"] > 0
    shipped = tmp_path / "dest" / "pkg"
    assert (shipped / "__init__.py").read_text() == "VALUE = 1\n"
    owners = {(p.stat().st_uid, p.stat().st_gid) for p in (shipped, *shipped.iterdir())}
    assert owners == {(0, 0)}

    assert converge(tmp_path)["changed"] == 0  # one read of the fingerprint, no copy

    (package / "__init__.py").write_text("VALUE = 2\n")
    assert converge(tmp_path)["changed"] > 0
    assert (shipped / "__init__.py").read_text() == "VALUE = 2\n"


def test_each_run_packs_into_an_archive_of_its_own(tmp_path: Path) -> None:
    """Two converges on one controller (two environments, two Jenkins executors) once
    packed into one fixed name, /tmp/cdpipe-code-<host>-<package>.tar.gz, and one
    removed the other's archive before it was unpacked (seen in CI). A run leaves
    another run's file at that name alone and packs into its own."""
    package = tmp_path / "project" / "pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("VALUE = 1\n")
    (package / "requirements.txt").write_text("")
    others = tmp_path / "cdpipe-code-localhost-pkg.tar.gz"  # in flight for another run
    others.write_bytes(b"another run's archive")

    assert converge(tmp_path)["changed"] > 0
    assert (tmp_path / "dest" / "pkg" / "__init__.py").read_text() == "VALUE = 1\n"
    assert others.read_bytes() == b"another run's archive"
    assert sorted(p.name for p in tmp_path.glob("cdpipe-code-*")) == [others.name]
