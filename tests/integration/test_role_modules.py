"""The roles' modules (library/cdpipe_files.py, cdpipe_program.py), run by ansible-playbook
for real: files on disk, a real supervisord."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from cdpipe import PROJECT_ROOT
from cdpipe.providers.local.sandbox import Sandbox, bin_path

PASSWORD = "S3cr3t-stats-pw"
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"


def haproxy_config(extra: str = "") -> str:
    return (
        "defaults\n    mode http\n    timeout connect 1s\n    timeout client 1s\n"
        "    timeout server 1s\n"
        "frontend stats\n    bind 127.0.0.1:8404\n    stats enable\n"
        f"    stats auth admin:{PASSWORD}\n{extra}"
    )


def apply(tmp_path: Path, files: list[dict[str, Any]], *, check: bool = False,
          secrets: list[str] | None = None) -> tuple[int, dict[str, Any], str]:
    """Runs one cdpipe_files task on localhost; (exit code, task result, whole output)."""
    args: dict[str, Any] = {"files": files}
    if secrets:
        args["secrets"] = secrets
    return run_task(tmp_path, "cdpipe_files", args, check=check)


def run_task(tmp_path: Path, module: str, args: dict[str, Any], *,
             check: bool = False) -> tuple[int, dict[str, Any], str]:
    task: dict[str, Any] = {"name": module, module: args}
    playbook = tmp_path / "files.yml"
    playbook.write_text(yaml.safe_dump(
        [{"hosts": "localhost", "gather_facts": False, "tasks": [task]}]))
    env = dict(os.environ, ANSIBLE_CONFIG=str(PROJECT_ROOT / "ansible.cfg"),
               ANSIBLE_STDOUT_CALLBACK="json", ANSIBLE_LOCALHOST_WARNING="false")
    out = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", "-c",
         "local", "-e", f"ansible_python_interpreter={sys.executable}", str(playbook),
         *(["--check"] if check else [])],
        env=env, capture_output=True, text=True, check=False, timeout=120,
    )
    report = json.loads(out.stdout)
    result = report["plays"][0]["tasks"][0]["hosts"]["localhost"]
    return out.returncode, result, out.stdout + out.stderr


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_files_are_written_then_left_alone_and_drift_is_repaired(tmp_path: Path) -> None:
    target = tmp_path / "conf"
    files = [{"path": str(target), "state": "directory", "mode": "0700"},
             {"path": str(target / "a.cfg"), "content": "one\n", "mode": "0600"}]
    rc, first, _ = apply(tmp_path, files)
    assert rc == 0 and first["changed"]
    assert first["changed_paths"] == [str(target), str(target / "a.cfg")]
    assert (target / "a.cfg").read_text() == "one\n"
    assert (mode(target), mode(target / "a.cfg")) == (0o700, 0o600)

    rc, second, _ = apply(tmp_path, files)
    assert rc == 0 and not second["changed"] and second["changed_paths"] == []

    (target / "a.cfg").chmod(0o644)
    (target / "b.old").write_text("stale\n")
    files.append({"path": str(target / "b.old"), "state": "absent"})
    rc, third, _ = apply(tmp_path, files)
    assert rc == 0 and third["changed_paths"] == [str(target / "a.cfg"), str(target / "b.old")]
    assert mode(target / "a.cfg") == 0o600
    assert not (target / "b.old").exists()


def test_check_mode_reports_what_would_change_and_writes_nothing(tmp_path: Path) -> None:
    target = tmp_path / "a.cfg"
    target.write_text("old\n")
    target.chmod(0o600)
    rc, result, _ = apply(tmp_path, [{"path": str(target), "content": "new\n", "mode": "0600"},
                                     {"path": str(tmp_path / "d"), "state": "directory",
                                      "mode": "0700"}], check=True)
    assert rc == 0 and result["changed_paths"] == [str(target), str(tmp_path / "d")]
    assert target.read_text() == "old\n"
    assert not (tmp_path / "d").exists()


@pytest.mark.skipif(not Path(HAPROXY).exists(), reason="needs haproxy")
def test_a_refused_file_keeps_the_old_one_and_shows_the_checkers_words_not_the_secret(
        tmp_path: Path) -> None:
    target = tmp_path / "haproxy.base.cfg"
    good = {"path": str(target), "content": haproxy_config(), "mode": "0600",
            "validate": f"{HAPROXY} -c -f %s"}
    assert apply(tmp_path, [good], secrets=[PASSWORD])[0] == 0
    # A line HAProxy refuses, quoting it back with the password in it.
    bad = dict(good, content=haproxy_config(f"    bogus-{PASSWORD}\n"))
    rc, result, output = apply(tmp_path, [bad], secrets=[PASSWORD])
    assert rc != 0 and result["msg"] == "failed to validate"
    assert "unknown keyword 'bogus-********'" in result["stderr"]
    assert PASSWORD not in output
    assert target.read_text() == haproxy_config()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".cdpipe-")] == []


# -- cdpipe_program: a supervisor program's file and state --------------------------------
PROGRAM = "[program:sleeper]\ncommand=sleep {seconds}\nautostart=true\nstartsecs=0\n"


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    """A real supervisord of its own (the local provider's), stopped at the end."""
    box = Sandbox("modules", tmp_path / "box", Path(tempfile.mkdtemp(prefix="cdp-")) / "run")
    box.create()
    box.start()
    try:
        yield box
    finally:
        box.stop()
        shutil.rmtree(box.run_dir.parent, ignore_errors=True)


def program(tmp_path: Path, box: Sandbox, seconds: int = 300,
            restart: bool = False) -> list[str]:
    rc, result, output = run_task(tmp_path, "cdpipe_program", {
        "name": "sleeper", "path": str(box.dir / "supervisor.d" / "sleeper.conf"),
        "content": PROGRAM.format(seconds=seconds), "supervisorctl": bin_path("supervisorctl"),
        "config": str(box.conf), "restart": restart})
    assert rc == 0, output
    assert result["changed"] == bool(result["actions"])
    return list(result["actions"])


def sleeper_pid(box: Sandbox) -> int:
    """The pid of the running program, from supervisorctl's own status line."""
    out = subprocess.run([bin_path("supervisorctl"), "-c", str(box.conf), "status", "sleeper"],
                         capture_output=True, text=True, check=False).stdout.split()
    assert out[1] == "RUNNING", out
    return int(out[3].rstrip(","))


def test_a_program_is_added_left_alone_started_restarted_and_updated(
        tmp_path: Path, sandbox: Sandbox) -> None:
    assert program(tmp_path, sandbox) == ["written", "updated"]
    first = sleeper_pid(sandbox)
    assert stat.S_IMODE((sandbox.dir / "supervisor.d" / "sleeper.conf").stat().st_mode) == 0o600
    assert program(tmp_path, sandbox) == []
    assert sleeper_pid(sandbox) == first

    subprocess.run([bin_path("supervisorctl"), "-c", str(sandbox.conf), "stop", "sleeper"],
                   capture_output=True, check=True)
    assert program(tmp_path, sandbox) == ["started"]
    started = sleeper_pid(sandbox)
    assert started != first and not psutil.pid_exists(first)

    assert program(tmp_path, sandbox, restart=True) == ["restarted"]
    restarted = sleeper_pid(sandbox)
    assert restarted != started

    # New content: supervisor applies it (a new process with the new command line).
    assert program(tmp_path, sandbox, seconds=301, restart=True) == ["written", "updated"]
    assert psutil.Process(sleeper_pid(sandbox)).cmdline() == ["sleep", "301"]


def test_the_code_archive_packs_only_what_the_host_lacks_as_roots(tmp_path: Path) -> None:
    """cdpipe_code_archive (the code role's one controller-side run): one fingerprint per
    package, byte caches left out; one archive of the packages whose fingerprint the host
    does not hold, its members root's; nothing packed when the host holds them all."""
    project = tmp_path / "project"
    for package in ("one", "two"):
        (project / package / "sub").mkdir(parents=True)
        (project / package / "sub" / "mod.py").write_text(f"NAME = {package!r}\n")
    args = {"project_dir": str(project), "packages": ["one", "two"], "dest": "/opt/x"}
    rc, first, _ = run_task(tmp_path, "cdpipe_code_archive", args | {"on_host": []})
    assert rc == 0 and not first["changed"] and first["to_ship"] == ["one", "two"]
    prints = first["fingerprints"]
    assert len(set(prints.values())) == 2  # the contents differ, so do the prints
    Path(first["archive"]).unlink()

    cache = project / "one" / "sub" / "__pycache__"
    cache.mkdir()
    (cache / "mod.cpython-311.pyc").write_bytes(b"\0cache")
    rc, second, _ = run_task(tmp_path, "cdpipe_code_archive",
                             args | {"on_host": [prints["one"]]})
    assert rc == 0 and second["fingerprints"] == prints  # the cache is not code
    assert second["to_ship"] == ["two"]
    assert second["fingerprint_files"] == [
        {"path": "/opt/x/two/.fingerprint", "content": prints["two"] + "\n", "mode": "0644"}]
    with tarfile.open(second["archive"]) as archive:
        members = archive.getmembers()
    Path(second["archive"]).unlink()
    assert sorted(m.name for m in members) == ["two", "two/sub", "two/sub/mod.py"]
    assert {(m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, "root", "root")}

    (project / "two" / "sub" / "mod.py").write_text("NAME = 'changed'\n")
    rc, third, _ = run_task(tmp_path, "cdpipe_code_archive",
                            args | {"on_host": [prints["one"], prints["two"]]})
    assert rc == 0 and third["to_ship"] == ["two"]
    Path(third["archive"]).unlink()
    rc, fourth, _ = run_task(tmp_path, "cdpipe_code_archive",
                             args | {"on_host": list(third["fingerprints"].values())})
    assert rc == 0 and fourth["to_ship"] == [] and fourth["archive"] == ""
