"""The machine rig: every EC2 instance a moto server launches becomes a real Debian
machine (a podman container with systemd, sshd and apt, at the instance's private
address), so the AWS path runs over SSH here. Test and demo infrastructure, not product
code: ``python -m rig up|down|env``, ``make machines``, ``make machines-down``.
"""
