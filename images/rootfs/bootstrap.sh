#!/usr/bin/env bash
# Creates the Debian tree of the `minimal` image in <target>: debootstrap
# --variant=minbase of bookworm plus the packages below, the default user
# `user`, and no apt lists or caches.
#
# Called by build.sh, which hashes this file (with the mirror and the
# debootstrap version) into the cache key of the tree: any edit here makes the
# next build debootstrap again, and nothing else does. Keep everything that
# only depends on the Debian tree here, and everything that depends on envd or
# wrenn-init in build.sh.
#
# usage: bootstrap.sh <mirror-url> <target-dir>
set -euo pipefail

mirror=$1
target=$2
suite=bookworm

# socat, chrony, tini, sudo: used by envd and wrenn-init. wget, curl,
# ca-certificates: what E2B users expect to fetch things with. python3, procps
# (ps, top, kill) and iproute2 (ip, ss): E2B's base image has them, and code
# written for E2B assumes them; see images/README.md.
packages=(socat chrony sudo wget curl ca-certificates tini python3 procps iproute2)

log() { printf '[rootfs] %s\n' "$*" >&2; }

if [ -e "$target" ]; then
	log "bootstrap target $target already exists"
	exit 1
fi

log "debootstrap --variant=minbase $suite from $mirror with: ${packages[*]}"
DEBIAN_FRONTEND=noninteractive debootstrap --variant=minbase --components=main \
	--include="$(IFS=,; echo "${packages[*]}")" "$suite" "$target" "$mirror" >&2

in_target() { DEBIAN_FRONTEND=noninteractive chroot "$target" "$@"; }

# The default user for commands, as in E2B: uid 1000, passwordless sudo.
in_target /usr/sbin/useradd --create-home --uid 1000 --user-group \
	--groups sudo --shell /bin/bash user
printf 'user ALL=(ALL:ALL) NOPASSWD: ALL\n' >"$target/etc/sudoers.d/wrenn-user"
chmod 0440 "$target/etc/sudoers.d/wrenn-user"
in_target /usr/sbin/visudo -c -q -f /etc/sudoers.d/wrenn-user

# debootstrap copies the build host's name and resolver; wrenn-init writes
# both at boot from the kernel command line, so the image carries neither.
rm -f "$target/etc/resolv.conf" "$target/etc/hostname"
printf 'wrenn\n' >"$target/etc/hostname"
printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$target/etc/hosts"

# Keep the image small: the package lists and caches are rebuilt by the first
# `apt-get update` in a sandbox anyway.
in_target apt-get clean
rm -rf "$target"/var/lib/apt/lists/* "$target"/var/cache/apt/*.bin \
	"$target"/var/cache/debconf/*-old "$target"/var/lib/dpkg/*-old \
	"$target"/var/log/apt/* "$target"/var/log/*.log "$target"/var/log/bootstrap.log \
	"$target"/tmp/* "$target"/root/.bash_history
chmod 1777 "$target/tmp"
log "bootstrap done: $(du -sh "$target" | cut -f1)"
