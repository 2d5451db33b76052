"""cdpipe.secret_files: generated once into files only the owner reads, kept across runs, and
overridden (and written through) by CDPIPE_* variables, as Jenkins' credentials
bindings set them."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from cdpipe import secret_files
from cdpipe.errors import CdpipeError

USERS = ("admin", "operator", "deployer", "controller", "monitor", "app")
NAMES = (*(f"redis_{user}_password" for user in USERS), "stats_password",
         "proxy_cookie_key", "app_user_id_secret")
ADMIN = "redis_admin_password"


@pytest.fixture(autouse=True)
def no_secret_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*NAMES, "redis_password"):
        monkeypatch.delenv(f"CDPIPE_{name.upper()}", raising=False)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The most permissive umask: modes must come from the code, not the umask."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_ensure_creates_0600_files_in_a_0700_dir(tmp_path: Path, open_umask: None) -> None:
    d = tmp_path / "home" / "secrets"
    values = secret_files.ensure(d)
    assert set(values) == set(NAMES)
    assert mode(d) == 0o700
    assert sorted(p.name for p in d.iterdir()) == sorted(NAMES)
    for name in NAMES:
        assert mode(d / name) == 0o600, name
        assert (d / name).read_text() == values[name] + "\n"
        assert len(values[name]) >= 32 and values[name].isascii()
        assert secret_files.read(d, name) == values[name]
    assert len(set(values.values())) == len(NAMES)  # one password per user


def test_an_existing_open_dir_is_closed_to_others(tmp_path: Path) -> None:
    d = tmp_path / "secrets"
    d.mkdir(mode=0o755)
    d.chmod(0o755)
    secret_files.ensure(d)
    assert mode(d) == 0o700


def test_values_are_kept_across_calls(tmp_path: Path) -> None:
    d = tmp_path / "secrets"
    first = secret_files.ensure(d)
    written = {name: (d / name).stat().st_mtime_ns for name in NAMES}
    assert secret_files.ensure(d) == first
    assert secret_files.ensure(d) == first
    assert {name: (d / name).stat().st_mtime_ns for name in NAMES} == written  # not rewritten
    assert secret_files.read(d, ADMIN) == first[ADMIN]


def test_read_of_a_missing_secret_is_none(tmp_path: Path) -> None:
    assert secret_files.read(tmp_path, ADMIN) is None
    assert secret_files.read(tmp_path / "nowhere", "stats_password") is None


def test_the_environment_overrides_and_is_written_through(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "secrets"
    generated = secret_files.ensure(d)
    monkeypatch.setenv("CDPIPE_REDIS_OPERATOR_PASSWORD", "from-jenkins")
    values = secret_files.ensure(d)
    assert values["redis_operator_password"] == "from-jenkins"
    assert values | {"redis_operator_password": generated["redis_operator_password"]} == \
        generated  # the others stay
    # Written through: Ansible reads the file (cdpipe_secrets_dir/redis_operator_password).
    assert (d / "redis_operator_password").read_text() == "from-jenkins\n"
    assert mode(d / "redis_operator_password") == 0o600

    # Without the variable, the value it set is the one kept (not a new random one).
    monkeypatch.delenv("CDPIPE_REDIS_OPERATOR_PASSWORD")
    assert secret_files.ensure(d)["redis_operator_password"] == "from-jenkins"


def test_the_single_password_of_earlier_versions_is_the_admins(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CDPIPE_REDIS_PASSWORD (Jenkins' cdpipe-redis-password) sets the admin user's;
    CDPIPE_REDIS_ADMIN_PASSWORD wins over it."""
    d = tmp_path / "secrets"
    monkeypatch.setenv("CDPIPE_REDIS_PASSWORD", "from-jenkins")
    values = secret_files.ensure(d)
    assert values[ADMIN] == "from-jenkins"
    assert "from-jenkins" not in {v for k, v in values.items() if k != ADMIN}
    assert not (d / "redis_password").exists()
    monkeypatch.setenv("CDPIPE_REDIS_ADMIN_PASSWORD", "admin-own")
    assert secret_files.ensure(d)[ADMIN] == "admin-own"


def test_a_password_file_of_earlier_versions_becomes_the_admins(tmp_path: Path) -> None:
    d = tmp_path / "secrets"
    d.mkdir()
    (d / "redis_password").write_text("old-single\n")
    values = secret_files.ensure(d)
    assert values[ADMIN] == "old-single"
    assert not (d / "redis_password").exists()
    assert sorted(p.name for p in d.iterdir()) == sorted(NAMES)


def test_the_environment_on_a_first_run_makes_the_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, open_umask: None) -> None:
    d = tmp_path / "secrets"
    monkeypatch.setenv("CDPIPE_STATS_PASSWORD", "s3cret/with+chars")
    values = secret_files.ensure(d)
    assert values["stats_password"] == "s3cret/with+chars"
    assert (d / "stats_password").read_text() == "s3cret/with+chars\n"
    assert mode(d / "stats_password") == 0o600


def test_an_empty_variable_does_not_override(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "secrets"
    generated = secret_files.ensure(d)
    monkeypatch.setenv("CDPIPE_REDIS_PASSWORD", "")
    monkeypatch.setenv("CDPIPE_REDIS_APP_PASSWORD", "")
    assert secret_files.ensure(d) == generated


def test_a_secret_file_with_loose_bits_is_tightened(tmp_path: Path) -> None:
    d = tmp_path / "secrets"
    d.mkdir()
    (d / "redis_app_password").write_text("kept\n")
    (d / "redis_app_password").chmod(0o644)
    assert secret_files.ensure(d)["redis_app_password"] == "kept"
    assert (d / "redis_app_password").stat().st_mode & 0o777 == 0o600


# -- an environment that exists: required, never generated ---------------------------
def test_require_never_generates_and_names_file_and_variable(tmp_path: Path) -> None:
    d = tmp_path / "secrets"
    with pytest.raises(CdpipeError) as missing:
        secret_files.require(d, secret_files.DEPLOY)
    message = str(missing.value)
    assert "\n" not in message
    assert "secret redis_app_password is missing" in message
    assert str(d / "redis_app_password") in message and "CDPIPE_REDIS_APP_PASSWORD" in message
    assert list(d.iterdir()) == []  # nothing made up


def test_require_reads_a_partial_directory_and_variables(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, open_umask: None) -> None:
    """The proxy machine holds a subset: enough for the commands that need only it."""
    d = tmp_path / "secrets"
    d.mkdir()
    (d / "redis_app_password").write_text("from-file\n")
    monkeypatch.setenv("CDPIPE_APP_USER_ID_SECRET", "from-jenkins")
    assert secret_files.require(d, secret_files.DEPLOY) == {"redis_app_password": "from-file",
                                                  "app_user_id_secret": "from-jenkins"}
    assert (d / "app_user_id_secret").read_text() == "from-jenkins\n"  # written through
    assert mode(d / "app_user_id_secret") == 0o600 and mode(d) == 0o700
    assert sorted(p.name for p in d.iterdir()) == sorted(secret_files.DEPLOY)
    with pytest.raises(CdpipeError, match="secret redis_deployer_password is missing"):
        secret_files.require(d, secret_files.SCALE_IN)
    assert secret_files.require(d, ()) == {}


def test_what_each_command_reads_is_among_the_secrets() -> None:
    assert (set(secret_files.DEPLOY) | set(secret_files.SCALE_IN)
            < set(secret_files.ALL) == set(NAMES))
