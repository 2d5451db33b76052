"""A small evaluator of identity policies, for the tests of the scaler's policy: what moto
does not check (moto matches EC2 requests against ``Resource: "*"`` only and ignores
conditions of identity policies). It follows IAM's rules for the subset the policy
uses: ``Action``/``Resource`` globs (``*``, ``?``, case-insensitive actions), Allow
statements only (no Deny: nothing is allowed unless a statement allows it), and the
condition operators ``StringEquals`` (every key present and equal to one of the values)
and ``ForAllValues:StringEquals`` (every value of a multi-valued key allowed; true when
the key is absent). Any other operator fails the test, so a policy cannot silently
outgrow the evaluator."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Request:
    action: str                      # "ec2:RunInstances"
    resource: str                    # an ARN, or "*"
    context: dict[str, str | list[str]] = field(default_factory=dict)


def _listed(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _glob(pattern: str, value: str, case: bool) -> bool:
    if not case:
        pattern, value = pattern.lower(), value.lower()
    return fnmatch.fnmatchcase(value, pattern.replace("[", "[[]"))


def _condition_holds(condition: dict[str, dict[str, Any]], context: dict[str, Any]) -> bool:
    for operator, keys in condition.items():
        for key, wanted in keys.items():
            allowed = _listed(wanted)
            if operator == "StringEquals":
                have = context.get(key)
                if have is None or isinstance(have, list) or have not in allowed:
                    return False
            elif operator == "ForAllValues:StringEquals":
                if not all(v in allowed for v in _listed(context.get(key, []))):
                    return False
            else:
                raise AssertionError(f"the evaluator does not know {operator}")
    return True


def allowed(policy: dict[str, Any], request: Request) -> bool:
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow", "the evaluator knows only Allow statements"
        if not any(_glob(a, request.action, case=False) for a in _listed(statement["Action"])):
            continue
        if not any(_glob(r, request.resource, case=True)
                   for r in _listed(statement["Resource"])):
            continue
        if _condition_holds(statement.get("Condition", {}), request.context):
            return True
    return False


def request_tags(tags: dict[str, str]) -> dict[str, str | list[str]]:
    """The context of a request that sets ``tags``."""
    context: dict[str, str | list[str]] = {f"aws:RequestTag/{k}": v for k, v in tags.items()}
    context["aws:TagKeys"] = list(tags)
    return context


def resource_tags(tags: dict[str, str]) -> dict[str, str | list[str]]:
    """The context of a request on a resource that carries ``tags``."""
    return {f"ec2:ResourceTag/{k}": v for k, v in tags.items()}
