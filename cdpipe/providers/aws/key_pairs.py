"""The environment's key pair: CDPIPE_AWS_KEY_NAME as it is (the user's own, never
deleted), else ``<project>-<environment>``, imported from CDPIPE_AWS_PUBLIC_KEY_FILE and
tagged, so that `cdpipe down` deletes it with the environment."""

from __future__ import annotations

from pathlib import Path

from cdpipe.errors import CdpipeError
from cdpipe.providers.aws.scope import Scope


def key_pair_name(scope: Scope) -> str:
    return scope.settings.aws_key_name or scope.prefix()


def ensure_key_pair(scope: Scope) -> str:
    name = key_pair_name(scope)
    found = scope.ec2.describe_key_pairs(
        Filters=[{"Name": "key-name", "Values": [name]}])["KeyPairs"]
    if found:
        return name
    if scope.settings.aws_key_name:
        raise CdpipeError(f"key pair {name!r} (CDPIPE_AWS_KEY_NAME) not found in "
                          f"{scope.region}; create it, or unset CDPIPE_AWS_KEY_NAME to "
                          "import CDPIPE_AWS_PUBLIC_KEY_FILE")
    path = Path(scope.settings.aws_public_key_file).expanduser()
    try:
        material = path.read_bytes()
    except OSError:
        raise CdpipeError(f"public key {path} not found; set CDPIPE_AWS_PUBLIC_KEY_FILE "
                          "or create one with ssh-keygen") from None
    scope.ec2.import_key_pair(KeyName=name, PublicKeyMaterial=material,
                              TagSpecifications=scope.tag_spec("key-pair", scope.tags()))
    return name


def delete_key_pairs(scope: Scope) -> None:
    """Deletes the key pairs carrying the environment's tags (a key pair of the user's
    own, CDPIPE_AWS_KEY_NAME, stays)."""
    if scope.settings.aws_key_name:
        return
    for pair in scope.ec2.describe_key_pairs(Filters=scope.filters())["KeyPairs"]:
        scope.ec2.delete_key_pair(KeyName=pair["KeyName"])
