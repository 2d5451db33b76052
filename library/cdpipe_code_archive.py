#!/usr/bin/python
"""Ansible module (runs on the controller): the code packages' fingerprints, and one
archive of those a host lacks."""

from __future__ import annotations

import hashlib
import os
import tarfile
import tempfile

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: cdpipe_code_archive
short_description: Fingerprint the code packages and pack those a host lacks, at once
description:
  - Runs on the controller (C(delegate_to: localhost)). Reads every file of each
    package under O(project_dir) (byte caches left out) into one fingerprint per
    package, compares each with the fingerprint read on the host, and packs the
    packages that differ into one gzip archive of its own (a new temporary file per
    run: two converges on one controller never share one).
  - One module run for all of a role's packages, whatever their number; on a converge
    that changes nothing, no archive is made.
  - The archive's members are owned by root; its temporary file is the caller's to
    remove.
options:
  project_dir:
    description: The directory holding the packages.
    type: path
    required: true
  packages:
    description: Package directories under O(project_dir).
    type: list
    elements: str
    required: true
  dest:
    description: Where the packages go on the host (C(<dest>/<package>/.fingerprint)).
    type: str
    required: true
  on_host:
    description: The fingerprint the host holds for each package, in order (empty when missing).
    type: list
    elements: str
    default: []
"""

EXAMPLES = r"""
- name: Fingerprint the packages and pack those the host lacks.
  cdpipe_code_archive:
    project_dir: "{{ code_project_dir }}"
    packages: [cdpipe_host, monitoring]
    dest: /opt/cdpipe/code
    on_host: "{{ code_on_host.stdout_lines }}"
  delegate_to: localhost
  register: code_pack
"""

RETURN = r"""
fingerprints:
  description: Package -> fingerprint of its files.
  type: dict
  returned: always
to_ship:
  description: The packages whose fingerprint differs on the host.
  type: list
  elements: str
  returned: always
archive:
  description: The archive of the packages to ship; empty when none differs.
  type: str
  returned: always
fingerprint_files:
  description: The changed packages' fingerprint files on the host, as M(cdpipe_files) entries.
  type: list
  elements: dict
  returned: always
"""


def skipped(name: str) -> bool:
    return name == "__pycache__" or name.endswith(".pyc")


def package_files(root: str) -> list[str]:
    """The package's regular files, relative to it, sorted."""
    found = []
    for current, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not skipped(d))
        for name in files:
            path = os.path.join(current, name)
            if not skipped(name) and os.path.isfile(path) and not os.path.islink(path):
                found.append(os.path.relpath(path, root))
    return sorted(found)


def fingerprint(root: str) -> str:
    digest = hashlib.sha256()
    for relative in package_files(root):
        with open(os.path.join(root, relative), "rb") as handle:
            data = handle.read()
        digest.update(f"{relative}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def as_root(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    if skipped(os.path.basename(info.name)):
        return None
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def pack(project_dir: str, packages: list[str]) -> str:
    descriptor, path = tempfile.mkstemp(prefix="cdpipe-code-", suffix=".tar.gz")
    try:
        with os.fdopen(descriptor, "wb") as raw, tarfile.open(
                fileobj=raw, mode="w:gz", compresslevel=6) as archive:
            for package in packages:
                archive.add(os.path.join(project_dir, package), arcname=package, filter=as_root)
    except BaseException:
        os.unlink(path)
        raise
    return path


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "project_dir": {"type": "path", "required": True},
            "packages": {"type": "list", "elements": "str", "required": True},
            "dest": {"type": "str", "required": True},
            "on_host": {"type": "list", "elements": "str", "default": []},
        },
        supports_check_mode=True,
    )
    project_dir, packages = module.params["project_dir"], module.params["packages"]
    on_host = list(module.params["on_host"]) + [""] * len(packages)
    fingerprints = {}
    for package in packages:
        root = os.path.join(project_dir, package)
        if not os.path.isdir(root):
            module.fail_json(msg=f"package {package}: no directory {root}")
        fingerprints[package] = fingerprint(root)
    changed = [p for i, p in enumerate(packages) if on_host[i].strip() != fingerprints[p]]
    archive = pack(project_dir, changed) if changed and not module.check_mode else ""
    files = [{"path": f"{module.params['dest']}/{p}/.fingerprint",
              "content": fingerprints[p] + "\n", "mode": "0644"} for p in changed]
    module.exit_json(changed=False, fingerprints=fingerprints, to_ship=changed,
                     archive=archive, fingerprint_files=files)


if __name__ == "__main__":
    main()
