#!/usr/bin/python
"""Ansible module: one supervisor program, its file and its state, in one module run."""

from __future__ import annotations

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.cdpipe_atomic import differs, replace, write_candidate

DOCUMENTATION = r"""
module: cdpipe_program
short_description: Ensure a supervisor program's file is in place and the program runs
description:
  - Writes the program file (mode 0600: its environment holds secrets) when its content
    differs, and has supervisor apply it at once (C(supervisorctl update NAME)).
  - Starts the program when it is not running or starting, and restarts it when
    O(restart) asks and the update did not already.
  - One module run where a template task and the supervisorctl module take three; the
    file's content is never shown.
options:
  name: {description: The program's name., type: str, required: true}
  path: {description: The program file., type: path, required: true}
  content: {description: The program file's content., type: str, required: true}
  supervisorctl: {description: The supervisorctl command., type: path, required: true}
  config: {description: supervisord's configuration file., type: path, required: true}
  restart:
    description: Restart the program (its code or configuration changed).
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Ensure Redis runs under the supervisor.
  cdpipe_program:
    name: redis
    path: /etc/supervisor/conf.d/redis.conf
    content: "{{ lookup('ansible.builtin.template', 'program.conf.j2') }}"
    supervisorctl: /usr/bin/supervisorctl
    config: /etc/supervisor/supervisord.conf
    restart: "{{ redis_config is changed }}"
"""

RETURN = r"""
actions:
  description: What was done, in order (written, updated, started, restarted).
  type: list
  elements: str
  returned: always
"""

RUNNING = ("RUNNING", "STARTING")


def supervisorctl(module: AnsibleModule, *args: str) -> str:
    """Runs supervisorctl; fails the task with its words when it reports an error."""
    p = module.params
    command = [p["supervisorctl"], "-c", p["config"], *args]
    rc, out, err = module.run_command(command)
    words = (out + err).strip()
    # status exits 3 for a program that is not running: that is an answer, not an error.
    if (rc != 0 and not (args[0] == "status" and rc == 3)) or "ERROR" in words:
        module.fail_json(msg=f"supervisorctl {' '.join(args)}: {words or f'exit {rc}'}", rc=rc)
    return words


def state(module: AnsibleModule) -> str:
    """The program's state name as `supervisorctl status NAME` reports it."""
    fields = supervisorctl(module, "status", module.params["name"]).split()
    return fields[1] if len(fields) > 1 else "UNKNOWN"


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "name": {"type": "str", "required": True},
            "path": {"type": "path", "required": True},
            "content": {"type": "str", "required": True, "no_log": True},
            "supervisorctl": {"type": "path", "required": True},
            "config": {"type": "path", "required": True},
            "restart": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    p = module.params
    name = p["name"]
    data = p["content"].encode()
    actions = []
    if differs(p["path"], data):
        actions += ["written", "updated"]
        if not module.check_mode:
            # mkstemp's 0600 stays through the rename: the environment holds secrets.
            replace(write_candidate(p["path"], data), p["path"])
            supervisorctl(module, "update", name)
    elif p["restart"]:
        actions.append("restarted")
        if not module.check_mode:
            supervisorctl(module, "restart", name)
    if not module.check_mode and state(module) not in RUNNING:
        supervisorctl(module, "start", name)
        actions.append("started")
    module.exit_json(changed=bool(actions), actions=actions)


if __name__ == "__main__":
    main()
