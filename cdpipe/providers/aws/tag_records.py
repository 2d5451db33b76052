"""What the environment records as tags, so that any workspace (or the proxy machine)
that knows the environment's id reads the same facts as the one that wrote them:
the commit each app instance runs (``Commit``; inventory/aws_ec2.yml reads it too) and
`cdpipe up`'s options (``cdpipe:option:<name>`` on the proxy)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

from cdpipe.errors import CdpipeError
from cdpipe.model import APP_ROLES, ROLES, Instance
from cdpipe.providers.aws.errors import aws_error
from cdpipe.providers.aws.scope import Scope, tags_of
from cdpipe.state import State

COMMIT_TAG = "Commit"
OPTION_TAG_PREFIX = "cdpipe:option:"
TAG_VALUE_LIMIT = 256  # characters of one tag value


def option_value(text: str) -> str | float | int:
    """An option's tag value back as the option: an int or a float when it reads as
    one (what `cdpipe up` records: seconds, and the rules file's absolute path)."""
    if re.fullmatch(r"-?[0-9]+", text):
        return int(text)
    if re.fullmatch(r"-?[0-9]*\.[0-9]+(e[-+]?[0-9]+)?|-?[0-9]+e[-+]?[0-9]+|-?[0-9]+\.", text):
        return float(text)
    return text


def majority_commit(commits: Sequence[str]) -> str:
    """The commit of a role whose instances disagree (a deploy or scale-out cut short):
    the one most of them run, a tie going to the commit of the most recently launched
    instance (``commits``: one per instance, oldest launch first)."""
    count = Counter(commits)
    last = {commit: index for index, commit in enumerate(commits)}
    return max(count, key=lambda commit: (count[commit], last[commit]))


def read_records(state: State, live: list[tuple[Instance, dict[str, Any]]]) -> None:
    """Sets ``state.deployed`` (each app role's commit, :func:`majority_commit` of its
    instances' tags; a role with no tag has none) and updates ``state.options`` from
    the proxy's option tags, given the live instances with their descriptions."""
    runs: dict[str, list[str]] = {}  # role -> its instances' commits, launch order
    for instance, desc in live:
        tags = tags_of(desc)
        if instance.role in APP_ROLES and tags.get(COMMIT_TAG):
            runs.setdefault(instance.role, []).append(tags[COMMIT_TAG])
        if instance.role == "proxy":
            state.options.update({k.removeprefix(OPTION_TAG_PREFIX): option_value(v)
                                  for k, v in tags.items() if k.startswith(OPTION_TAG_PREFIX)})
    state.deployed = {role: majority_commit(runs[role]) for role in ROLES if role in runs}


def check_options(options: dict[str, str | float | int]) -> None:
    for name, value in options.items():
        if len(str(value)) > TAG_VALUE_LIMIT:
            raise CdpipeError(
                f"option {name} is {len(str(value))} characters long; AWS keeps at most "
                f"{TAG_VALUE_LIMIT} in the tag {OPTION_TAG_PREFIX}{name} (a rules file "
                "path: move the file to a shorter path)")


def record_options(scope: Scope, state: State) -> None:
    """Tags the proxy with each option (``cdpipe:option:<name>``)."""
    check_options(state.options)
    ids = [i.id for i in state.of_role("proxy")]
    if not ids or not state.options:
        return
    try:
        scope.ec2.create_tags(Resources=ids, Tags=[
            {"Key": f"{OPTION_TAG_PREFIX}{name}", "Value": str(value)}
            for name, value in state.options.items()])
    except Exception as exc:
        raise aws_error(exc, "tagging the proxy with the options") from None


def record_deployed(scope: Scope, state: State) -> None:
    """Tags each app instance with the commit it now runs (``Commit``)."""
    try:
        for role, commit in state.deployed.items():
            ids = [i.id for i in state.of_role(role)]  # type: ignore[arg-type]
            if ids:
                scope.ec2.create_tags(Resources=ids, Tags=[{"Key": COMMIT_TAG, "Value": commit}])
    except Exception as exc:
        raise aws_error(exc, "tagging the instances with the deployed commit") from None
