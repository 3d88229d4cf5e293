#!/usr/bin/env bash
# Builds the Wrenn guest kernel: an uncompressed, module-free vmlinux with a
# PVH entry, from Debian's linux-source-6.1 and images/kernel/microvm.config.
#
# The result is cached under $WRENN_CACHE/kernel/<key>/, where <key> hashes the
# config fragment, this script and the linux-source package version, so a rerun
# with unchanged inputs only copies the cached file into $WRENN_DIR/kernels/.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
WRENN_DIR=${WRENN_DIR:-/var/lib/wrenn}
WRENN_CACHE=${WRENN_CACHE:-/var/cache/wrenn}
fragment=$here/microvm.config
src_tar=/usr/src/linux-source-6.1.tar.xz

log() { printf '[kernel] %s\n' "$*" >&2; }

if [ ! -f "$src_tar" ]; then
	log "missing $src_tar: install the linux-source-6.1 package (scripts/deps.sh does)"
	exit 1
fi

src_version=$(dpkg-query -W -f='${Version}' linux-source-6.1)
key=$( { cat "$fragment" "$0"; echo "$src_version"; } | sha256sum | cut -c1-16)
cache=$WRENN_CACHE/kernel/$key

install_cached() {
	local built
	[ -d "$cache" ] || return 1
	built=$(find "$cache" -maxdepth 1 -name 'vmlinux-*' -print -quit)
	[ -n "$built" ] || return 1
	mkdir -p "$WRENN_DIR/kernels"
	# Copy to a temporary name and rename so a reader never sees half a file.
	cp "$built" "$WRENN_DIR/kernels/.tmp-$(basename "$built")"
	mv -f "$WRENN_DIR/kernels/.tmp-$(basename "$built")" "$WRENN_DIR/kernels/$(basename "$built")"
	log "installed $WRENN_DIR/kernels/$(basename "$built") (cache key $key)"
}

if install_cached; then
	exit 0
fi

work=$WRENN_CACHE/kernel/build-$key
rm -rf "$work"
mkdir -p "$work"
trap 'rm -rf "$work"' EXIT

start=$(date +%s)
log "extracting linux-source $src_version"
tar -C "$work" -xf "$src_tar"
tree=$work/linux-source-6.1

log "configuring: allnoconfig + $(basename "$fragment")"
make -C "$tree" -s ARCH=x86_64 KCONFIG_ALLCONFIG="$fragment" allnoconfig

# allnoconfig silently drops options whose dependencies are not met; every
# requested option must have survived, or the guest would miss a feature.
missing=0
while IFS= read -r line; do
	case "$line" in '' | '#'*) continue ;; esac
	opt=${line%%=*}
	val=${line#*=}
	if [ "$val" = n ]; then
		if grep -q "^$opt=" "$tree/.config"; then
			log "option $opt should be unset but is: $(grep "^$opt=" "$tree/.config")"
			missing=1
		fi
	elif ! grep -qxF "$line" "$tree/.config"; then
		log "option lost after allnoconfig: $line (have: $(grep -E "^(# )?$opt[= ]" "$tree/.config" || echo absent))"
		missing=1
	fi
done <"$fragment"
if [ "$missing" != 0 ]; then
	log "kernel config verification failed"
	exit 1
fi

log "building vmlinux with $(nproc) jobs"
make -C "$tree" -s ARCH=x86_64 -j"$(nproc)" vmlinux
semver=$(make -C "$tree" -s kernelversion)

mkdir -p "$cache"
cp "$tree/vmlinux" "$cache/.tmp-vmlinux"
cp "$tree/.config" "$cache/config"
mv "$cache/.tmp-vmlinux" "$cache/vmlinux-$semver"
log "built vmlinux-$semver in $(($(date +%s) - start)) s"
install_cached
