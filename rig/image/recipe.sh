#!/usr/bin/env bash
# Builds the root filesystem of a rig machine into $1: Debian 12 as an EC2 machine
# meets the roles. A default user with passwordless sudo (as Ubuntu AMIs have `ubuntu`;
# Debian's AMIs call it `admin`), sshd with keys only and host keys made at each
# machine's first boot, systemd as PID 1, an empty apt cache. The image tag is a hash
# of this folder, so editing this file rebuilds the image and nothing else does.
set -euo pipefail
root=${1:?usage: recipe.sh ROOTFS}
mirror=${RIG_DEBIAN_MIRROR:-http://deb.debian.org/debian}

debootstrap --variant=minbase \
  --include=systemd,systemd-sysv,openssh-server,python3,sudo,ca-certificates,iproute2 \
  bookworm "$root" "$mirror"

cat > "$root/etc/apt/sources.list" <<SOURCES
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
SOURCES

chroot "$root" useradd --create-home --shell /bin/bash admin
echo 'admin ALL=(ALL) NOPASSWD:ALL' > "$root/etc/sudoers.d/90-admin"
chmod 0440 "$root/etc/sudoers.d/90-admin"
install -d -m 0700 "$root/home/admin/.ssh"
chroot "$root" chown admin:admin /home/admin/.ssh

cat > "$root/etc/ssh/sshd_config.d/rig.conf" <<SSHD
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
UseDNS no
SSHD
# At every boot, before sshd: host keys made for this machine (as cloud-init does on
# EC2), and the certificate authorities the rig copied in from the control machine
# (behind a TLS-inspecting egress proxy, apt and pip need them as an AMI would).
rm -f "$root"/etc/ssh/ssh_host_*
cat > "$root/etc/systemd/system/rig-first-boot.service" <<UNIT
[Unit]
Description=Host keys and trusted CAs of this machine
Before=ssh.service

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A
ExecStart=/usr/sbin/update-ca-certificates

[Install]
WantedBy=multi-user.target
UNIT
chroot "$root" systemctl enable rig-first-boot.service ssh.service
# Nothing in a container drives consoles or devices.
chroot "$root" systemctl mask getty@tty1.service console-getty.service \
  systemd-udevd.service systemd-udev-trigger.service systemd-remount-fs.service \
  sys-kernel-debug.mount sys-kernel-tracing.mount
: > "$root/etc/machine-id"
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
