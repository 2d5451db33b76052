"""The CLI's Redis URLs and errors per user: the operator's by default, the password
percent-encoded, REDACTED when shown without secrets; a refusal by the ACL or a wrong
password is one line that says so (not "unreachable")."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import redis

from cdpipe import controls, secret_files
from cdpipe.config import Settings
from cdpipe.errors import CdpipeError
from cdpipe.model import Instance
from cdpipe.redis_users import DEPLOYER, OPERATOR, USERS, password_name
from cdpipe.state import State


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Settings, State]:
    for user in USERS:
        monkeypatch.delenv(f"CDPIPE_{password_name(user).upper()}", raising=False)
    monkeypatch.setenv("CDPIPE_REDIS_OPERATOR_PASSWORD", "p@ss:w/rd%")
    settings = Settings(home=tmp_path)
    secret_files.ensure(settings.secrets_dir)
    state = State(instances=[Instance(id="redis-1", role="redis", host="127.0.0.1",
                                      ports={"redis": 18010}, provider="local")])
    return settings, state


def test_the_operators_url_by_default_with_its_password_encoded(
        env: tuple[Settings, State]) -> None:
    url = controls.redis_url(*env)
    assert url == "redis://operator:p%40ss%3Aw%2Frd%25@127.0.0.1:18010/0"
    parts = urlsplit(url)
    assert (parts.username, unquote(parts.password or "")) == (OPERATOR, "p@ss:w/rd%")
    kwargs = redis.connection.parse_url(url)  # as redis-py reads it
    assert (kwargs["username"], kwargs["password"]) == (OPERATOR, "p@ss:w/rd%")


def test_another_user_and_the_redacted_form(env: tuple[Settings, State]) -> None:
    settings, state = env
    deployer = secret_files.read(settings.secrets_dir, password_name(DEPLOYER))
    assert controls.redis_url(settings, state, DEPLOYER) == (
        f"redis://deployer:{deployer}@127.0.0.1:18010/0")
    assert controls.redis_url(settings, state, with_password=False) == (
        "redis://operator:REDACTED@127.0.0.1:18010/0")
    assert controls.redis_url(settings, State()) is None


@pytest.mark.parametrize(("error", "says"), [
    (redis.exceptions.NoPermissionError("this user has no permissions"), "Redis refused it"),
    (redis.AuthenticationError("WRONGPASS"), "Redis refused the password"),
    (redis.ConnectionError("refused"), "Redis unreachable"),
])
def test_each_redis_failure_is_one_line_that_says_which(error: Exception, says: str) -> None:
    def fail() -> None:
        raise error
    with pytest.raises(CdpipeError, match=f"^cannot set the flag: {says}"):
        controls._call("set the flag", fail)
