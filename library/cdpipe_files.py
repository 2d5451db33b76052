#!/usr/bin/python
"""Ansible module: a role's directories and files, in one module run."""

from __future__ import annotations

import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.cdpipe_atomic import differs, replace, write_candidate

DOCUMENTATION = r"""
module: cdpipe_files
short_description: Ensure a set of directories and files, in one module run
description:
  - Each entry is a directory or a file with its content, mode, owner and group, as
    M(ansible.builtin.file) and M(ansible.builtin.copy) would make it; a file changes
    only when its content or attributes differ, through a temporary file moved into
    place, after its O(files[].validate) command accepted it.
  - One module run for all of a role's files instead of two per template (stat, then
    file): on a converge that changes nothing, the cost of a role's files is one run.
  - Entries apply in order; the first failure stops, naming its path. Entries before
    it stay applied, as separate tasks would leave them.
options:
  files:
    description: The entries, applied in order.
    type: list
    elements: dict
    required: true
    suboptions:
      path: {description: Absolute path., type: path, required: true}
      state:
        description: What the path is; C(absent) removes a file that should not stay.
        type: str
        choices: [file, directory, absent]
        default: file
      content: {description: The file's content (state=file)., type: str}
      mode: {description: Octal mode as a string (files and directories)., type: str}
      owner: {description: Owner (unset keeps the creator's)., type: str}
      group: {description: Group (unset keeps the creator's)., type: str}
      validate:
        description: Command run on the candidate file (%s is its path); non-zero refuses it.
        type: str
  secrets:
    description:
      - Values masked as C(********) wherever they appear in the result, such as
        passwords in a validate command's message.
    type: list
    elements: str
    default: []
    no_log: true
"""

EXAMPLES = r"""
- name: Ensure the proxy's directory and configuration files are in place.
  cdpipe_files:
    files:
      - {path: /opt/cdpipe/haproxy, state: directory, mode: "0700"}
      - path: /opt/cdpipe/haproxy/haproxy.base.cfg
        content: "{{ lookup('ansible.builtin.template', 'haproxy.base.cfg.j2') }}"
        mode: "0600"
        validate: haproxy -c -f %s
    secrets: ["{{ proxy_stats_password }}"]
  register: proxy_files
"""

RETURN = r"""
changed_paths:
  description: The paths created or changed, in the order given.
  type: list
  elements: str
  returned: always
"""

FILE_SPEC = {
    "path": {"type": "path", "required": True},
    "state": {"type": "str", "choices": ["file", "directory", "absent"], "default": "file"},
    "content": {"type": "str", "no_log": True},
    "mode": {"type": "str"},
    "owner": {"type": "str"},
    "group": {"type": "str"},
    "validate": {"type": "str"},
}


def attributes(module: AnsibleModule, entry: dict, path: str) -> dict:
    """The file arguments set_fs_attributes_if_different reads."""
    wanted = {"mode": entry["mode"], "owner": entry["owner"], "group": entry["group"]}
    return module.load_file_common_arguments(wanted, path=path)


def ensure_directory(module: AnsibleModule, entry: dict) -> bool:
    path = entry["path"]
    changed = False
    if not os.path.isdir(path):
        if os.path.lexists(path):
            module.fail_json(msg=f"{path}: exists and is not a directory")
        changed = True
        if not module.check_mode:
            os.makedirs(path)
    if module.check_mode and changed:
        return True
    return module.set_fs_attributes_if_different(attributes(module, entry, path), changed)


def candidate_for(module: AnsibleModule, entry: dict, data: bytes) -> str:
    """The new content in a temporary file beside the target, attributes set."""
    candidate = write_candidate(entry["path"], data)
    module.set_fs_attributes_if_different(attributes(module, entry, candidate), True)
    return candidate


def validate(module: AnsibleModule, entry: dict, candidate: str) -> None:
    command = entry["validate"]
    if "%s" not in command:
        module.fail_json(msg=f"{entry['path']}: validate must contain %s: {command}")
    rc, out, err = module.run_command(command % candidate)
    if rc != 0:
        os.unlink(candidate)
        # The shape of ansible.builtin.template's refusal: the checker's own words in
        # stdout/stderr, secrets masked by Ansible (they are no_log values).
        module.fail_json(
            msg="failed to validate", path=entry["path"], exit_status=rc, stdout=out, stderr=err
        )


def ensure_file(module: AnsibleModule, entry: dict) -> bool:
    path = entry["path"]
    if entry["content"] is None:
        module.fail_json(msg=f"{path}: a file needs content")
    if os.path.isdir(path):
        module.fail_json(msg=f"{path}: is a directory")
    data = entry["content"].encode()
    if differs(path, data):
        if module.check_mode:
            return True
        candidate = candidate_for(module, entry, data)
        if entry["validate"]:
            validate(module, entry, candidate)
        replace(candidate, path)
        return True
    # In check mode this only reports whether mode, owner or group would change.
    return module.set_fs_attributes_if_different(attributes(module, entry, path), False)


def ensure_absent(module: AnsibleModule, entry: dict) -> bool:
    path = entry["path"]
    if not os.path.lexists(path):
        return False
    if os.path.isdir(path) and not os.path.islink(path):
        module.fail_json(msg=f"{path}: is a directory; only files are removed")
    if not module.check_mode:
        os.unlink(path)
    return True


APPLY = {"directory": ensure_directory, "file": ensure_file, "absent": ensure_absent}


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "files": {"type": "list", "elements": "dict", "required": True, "options": FILE_SPEC},
            "secrets": {"type": "list", "elements": "str", "default": [], "no_log": True},
        },
        supports_check_mode=True,
    )
    changed_paths = []
    for entry in module.params["files"]:
        if entry["state"] != "absent" and not entry["mode"]:
            module.fail_json(msg=f"{entry['path']}: a mode is required")
        if APPLY[entry["state"]](module, entry):
            changed_paths.append(entry["path"])
    module.exit_json(changed=bool(changed_paths), changed_paths=changed_paths)


if __name__ == "__main__":
    main()
