"""The IAM side of an environment's scaler: the role ``<project>-<env>-scaler``
(trusted by EC2 only), its inline policy (:mod:`cdpipe.providers.aws.iam_policy`), and the
instance profile of the same name that the proxy machine is launched with, so that the
monitor there scales prod with the least credentials it needs.

Everything is tagged like the rest of the environment and found again by name; a role
of that name without the environment's tags is refused, never changed or removed.
IAM is eventually consistent: a profile just made may look invalid to EC2 for some
seconds, so the calls that pass it to EC2 are retried with backoff.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

import botocore.exceptions

from cdpipe.errors import CdpipeError
from cdpipe.providers.aws import iam_policy
from cdpipe.providers.aws.backoff import retry_with_backoff
from cdpipe.providers.aws.errors import DENIED, error_code, iam_error

# RunInstances may call a just-made instance profile invalid while IAM's change reaches
# EC2: retried with backoff (backoff.py), this long.
PROFILE_WAIT_SECONDS = 120.0


class ScalerProfile:
    def __init__(self, iam: Any, ec2: Any, name: str, tags: dict[str, str],
                 policy: Callable[[], dict[str, Any]], show: Callable[[str], None]) -> None:
        self.iam, self.ec2, self.name = iam, ec2, name
        self.tags, self.policy, self.show = tags, policy, show

    def _iam_tags(self) -> list[dict[str, str]]:
        return [{"Key": k, "Value": v} for k, v in self.tags.items()]

    def _is_mine(self, tags: list[dict[str, str]]) -> bool:
        have = {t["Key"]: t["Value"] for t in tags}
        return all(have.get(k) == self.tags[k] for k in ("Project", "Environment"))

    def ensure(self) -> str:
        """The role with the policy inline and the instance profile holding it;
        idempotent. The policy is written again each time, so a changed policy reaches
        the machines."""
        name, environment = self.name, self.tags["Environment"]
        try:
            try:
                role = self.iam.get_role(RoleName=name)["Role"]
                if not self._is_mine(role.get("Tags", [])):
                    raise CdpipeError(f"IAM role {name} exists but does not carry the tags of "
                                      f"{environment}; remove or rename it")
            except botocore.exceptions.ClientError as exc:
                if error_code(exc) != "NoSuchEntity":
                    raise
                self.iam.create_role(
                    RoleName=name, AssumeRolePolicyDocument=json.dumps(iam_policy.EC2_TRUST),
                    Description=f"cdpipe {environment}: the monitor's scaling",
                    Tags=self._iam_tags())
                self.show(f"created IAM role and instance profile {name} (the proxy's "
                          "credentials for scaling; `cdpipe iam-policy` prints its policy)")
            self.iam.put_role_policy(RoleName=name, PolicyName=name,
                                     PolicyDocument=json.dumps(self.policy()))
            try:
                profile = self.iam.get_instance_profile(
                    InstanceProfileName=name)["InstanceProfile"]
            except botocore.exceptions.ClientError as exc:
                if error_code(exc) != "NoSuchEntity":
                    raise
                profile = self.iam.create_instance_profile(
                    InstanceProfileName=name, Tags=self._iam_tags())["InstanceProfile"]
            if not any(r["RoleName"] == name for r in profile.get("Roles", [])):
                self.iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)
            self.iam.get_waiter("instance_profile_exists").wait(
                InstanceProfileName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
        except CdpipeError:
            raise
        except Exception as exc:
            raise iam_error(exc, f"creating the scaler's role and instance profile {name}"
                            ) from None
        return name

    def attach(self, raw_proxies: list[dict[str, Any]]) -> None:
        """A proxy made before the scaler existed (or without it) gets the profile."""
        for raw in raw_proxies:
            if raw.get("IamInstanceProfile"):
                continue
            iid = str(raw["InstanceId"])
            self.show(f"{iid} (proxy): associating instance profile {self.name}")
            self.retry(functools.partial(self.ec2.associate_iam_instance_profile,
                                         IamInstanceProfile={"Name": self.name},
                                         InstanceId=iid))

    def retry(self, call: Callable[[], Any]) -> Any:
        """``call()``, retried with backoff while EC2 does not see the new profile yet."""
        profile = self.name

        def not_visible_yet(exc: botocore.exceptions.ClientError) -> bool:
            if error_code(exc) in DENIED:
                raise CdpipeError(
                    f"AWS refused {exc.operation_name} with instance profile {profile} "
                    f"({error_code(exc)}): the user running cdpipe needs "
                    f"ec2:{exc.operation_name} and iam:PassRole on role {profile}") from None
            message = str(exc.response.get("Error", {}).get("Message", "")).lower()
            return (error_code(exc) == "InvalidParameterValue"
                    and "instanceprofile" in message.replace(" ", ""))

        return retry_with_backoff(
            call, transient=not_visible_yet, limit=PROFILE_WAIT_SECONDS,
            waiting=lambda wait: self.show(
                f"instance profile {profile} is not visible to EC2 yet (IAM is "
                f"eventually consistent); retrying in {wait:.0f} s"),
            gave_up=lambda: CdpipeError(
                f"EC2 still calls instance profile {profile} invalid after "
                f"{PROFILE_WAIT_SECONDS:.0f} s; run `cdpipe provision` again"))

    def remove(self) -> list[str]:
        """Deletes the profile, the role's policy and the role (only when the role
        carries the environment's tags); gone ones are skipped. What was removed."""
        name = self.name
        removed: list[str] = []

        def gone(call: Any, **kwargs: Any) -> bool:
            try:
                call(**kwargs)
                return True
            except botocore.exceptions.ClientError as exc:
                if error_code(exc) == "NoSuchEntity":
                    return False
                raise
        try:
            try:
                role = self.iam.get_role(RoleName=name)["Role"]
            except botocore.exceptions.ClientError as exc:
                if error_code(exc) != "NoSuchEntity":
                    raise
                role = None
            if role is not None and not self._is_mine(role.get("Tags", [])):
                self.show(f"IAM role {name} does not carry the tags of "
                          f"{self.tags['Environment']}; left as it is")
                return removed
            gone(self.iam.remove_role_from_instance_profile, InstanceProfileName=name,
                 RoleName=name)
            if gone(self.iam.delete_instance_profile, InstanceProfileName=name):
                removed.append(f"instance profile {name}")
            if role is not None:
                gone(self.iam.delete_role_policy, RoleName=name, PolicyName=name)
                if gone(self.iam.delete_role, RoleName=name):
                    removed.append(f"role {name}")
        except Exception as exc:
            raise iam_error(exc, f"removing the scaler's role and instance profile {name}"
                            ) from None
        return removed
