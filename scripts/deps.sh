#!/usr/bin/env bash
# Installs the Debian packages Wrenn needs to build, test and run, skipping
# what is already installed so a warm run costs well under a second.
# Go tools (protoc plugins, staticcheck) are pinned in go.mod's tool block and
# fetched by the go command itself.
set -euo pipefail

packages=(
	# guests
	qemu-system-x86 qemu-utils
	# guest kernel build
	linux-source-6.1 build-essential bc bison flex libelf-dev libssl-dev xz-utils python3 dwarves
	# rootfs build
	debootstrap e2fsprogs
	# reflink-capable scratch filesystems in disk tests
	btrfs-progs
	# host networking and tests
	iproute2 nftables
	# E2B's Python SDK in tests/compat and the benchmark (venv + ensurepip);
	# its JavaScript SDK needs Node >= 20.18, which this machine kind ships
	# (Debian's nodejs is 18, so it is not installed from here)
	python3-venv
	# contracts
	protobuf-compiler libprotobuf-dev
	# control plane state
	postgresql
	# benchmark baseline (gVisor)
	runsc
	# the dashboard's browser tests (tests/browser drive it with the
	# playwright-core npm package; no browser is downloaded)
	chromium
)

missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
	exit 0
fi
if [ "$(id -u)" != 0 ]; then
	echo "deps: missing packages ${missing[*]}; run as root to install them" >&2
	exit 1
fi
echo "deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
