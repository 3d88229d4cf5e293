#!/usr/bin/env bash
# Builds the base rootfs image `minimal`: $WRENN_DIR/images/minimal/rootfs.ext4
# and manifest.json beside it.
#
# Two stages, so that a new envd or wrenn-init costs seconds, not a debootstrap:
#   1. bootstrap.sh debootstraps the Debian tree into
#      $WRENN_CACHE/rootfs/<key>/tree, where <key> hashes bootstrap.sh (which
#      holds the package list), the apt mirror and the debootstrap version.
#      With the tree cached this stage is skipped.
#   2. assemble: a hard-link copy of the tree gets envd and wrenn-init, and
#      `mkfs.ext4 -d` writes it to a temporary file that is renamed over the
#      image (no mounts, no loop devices). With unchanged inputs (tree key,
#      both binaries, this script) nothing is rewritten.
#
# Environment: ENVD_BIN and INIT_BIN (required) are the static envd and
# wrenn-init binaries; WRENN_DIR (default /var/lib/wrenn) and WRENN_CACHE
# (default /var/cache/wrenn); WRENN_DEBIAN_MIRROR overrides the mirror read
# from the machine's apt sources; SOURCE_DATE_EPOCH overrides the timestamp
# of the files added by this script. Runs as root.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
WRENN_DIR=${WRENN_DIR:-/var/lib/wrenn}
WRENN_CACHE=${WRENN_CACHE:-/var/cache/wrenn}
template=minimal
suite=bookworm

log() { printf '[rootfs] %s\n' "$*" >&2; }
die() {
	log "$*"
	exit 1
}

start_ns=$(date +%s%N)

[ "$(id -u)" = 0 ] || die "must run as root (debootstrap and chroot need it)"
[ -n "${ENVD_BIN:-}" ] || die "ENVD_BIN is not set: point it at the static envd binary"
[ -n "${INIT_BIN:-}" ] || die "INIT_BIN is not set: point it at the static wrenn-init binary"
for bin in "$ENVD_BIN" "$INIT_BIN"; do
	[ -f "$bin" ] && [ -x "$bin" ] || die "$bin is not an executable file"
	# The guest has glibc, but a binary linked against the build host's glibc
	# may need a newer one; both must be static (CGO_ENABLED=0).
	if command -v readelf >/dev/null && LC_ALL=C readelf -l "$bin" 2>/dev/null | grep -q 'program interpreter'; then
		die "$bin is dynamically linked: build it with CGO_ENABLED=0"
	fi
done
for tool in debootstrap mkfs.ext4 debugfs sha256sum flock; do
	command -v "$tool" >/dev/null || die "missing $tool (apt-get install debootstrap e2fsprogs coreutils util-linux)"
done

# apt_mirror prints the first URI that serves $suite to deb packages, from the
# deb822 files in sources.list.d and then the one-line sources.list.
apt_mirror() {
	local f
	for f in /etc/apt/sources.list.d/*.sources; do
		[ -f "$f" ] || continue
		awk -v suite="$suite" '
			function flush() {
				if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " suite " ") && enabled != "no" && uri != "") { print uri; found = 1; exit }
				types = ""; suites = ""; uri = ""; enabled = ""
			}
			/^[ \t]*#/ { next }
			/^[ \t]*$/ { flush(); next }
			tolower($1) == "types:" { $1 = ""; types = $0 }
			tolower($1) == "suites:" { $1 = ""; suites = $0 }
			tolower($1) == "uris:" { uri = $2 }
			tolower($1) == "enabled:" { enabled = tolower($2) }
			END { if (!found) flush() }
		' "$f" | head -n1
	done
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[ -f "$f" ] || continue
		# deb [options] uri suite components...
		sed -e 's/\[[^]]*\]//' "$f" | awk -v suite="$suite" '$1 == "deb" && $3 == suite { print $2; exit }'
	done
}

mirror=${WRENN_DEBIAN_MIRROR:-$(apt_mirror | head -n1)}
[ -n "$mirror" ] || die "no apt source for $suite in /etc/apt: set WRENN_DEBIAN_MIRROR"
debootstrap_version=$(dpkg-query -W -f='${Version}' debootstrap)

key=$( { cat "$here/bootstrap.sh"; echo "$mirror"; echo "$debootstrap_version"; } | sha256sum | cut -c1-16)
cache_root=$WRENN_CACHE/rootfs
cache=$cache_root/$key
tree=$cache/tree
out=$WRENN_DIR/images/$template
image=$out/rootfs.ext4

mkdir -p "$cache_root" "$out"
# One build at a time per cache: two `make images` must not debootstrap into
# the same directory or rename over each other's image.
exec 9>"$cache_root/.lock"
flock 9

if [ ! -d "$tree" ]; then
	work=$cache_root/.bootstrap-$key
	rm -rf "$work"
	mkdir -p "$work"
	trap 'rm -rf "$work"' EXIT
	"$here/bootstrap.sh" "$mirror" "$work/tree"
	mkdir -p "$cache"
	mv "$work/tree" "$tree"
	rm -rf "$work"
	trap - EXIT
	# Trees of older keys are dead weight (a debootstrap is cheaper than
	# keeping every revision around).
	find "$cache_root" -mindepth 1 -maxdepth 1 -type d ! -name "$key" -exec rm -rf {} +
	log "cached Debian tree $tree"
else
	log "using cached Debian tree (key $key)"
fi

sha() { sha256sum "$1" | cut -d' ' -f1; }
envd_sha=$(sha "$ENVD_BIN")
init_sha=$(sha "$INIT_BIN")
build_sha=$(sha "${BASH_SOURCE[0]}")
inputs_hash=$(printf 'tree=%s\nenvd=%s\ninit=%s\nbuild=%s\n' "$key" "$envd_sha" "$init_sha" "$build_sha" | sha256sum | cut -d' ' -f1)

if [ -f "$image" ] && [ -f "$out/manifest.json" ] && [ "$(cat "$out/.inputs" 2>/dev/null)" = "$inputs_hash" ]; then
	log "$image is up to date (inputs $(printf %.16s "$inputs_hash"))"
	exit 0
fi

# Everything written into the image gets one timestamp, so the same inputs
# give the same bytes. The tree's own files keep theirs (fixed once cached).
epoch=${SOURCE_DATE_EPOCH:-$(stat -c %Y "$tree/var/lib/dpkg/status")}
# A UUID derived from the inputs: reproducible, and different per image.
uuid=$(printf '%s' "$inputs_hash" | sed -E 's/^(.{8})(.{4}).(.{3}).(.{3})(.{12}).*/\1-\2-5\3-8\4-\5/')

stage=$cache_root/.stage-$$
tmp=$out/.rootfs.ext4.tmp-$$
trap 'rm -rf "$stage" "$stage.debugfs" "$tmp"' EXIT
# Hard links: no data is copied, and the cached tree is never written to
# (the two binaries are new names in the stage, not overwrites).
cp -al "$tree" "$stage"
install -m 0755 "$ENVD_BIN" "$stage/usr/local/bin/envd"
install -m 0755 "$INIT_BIN" "$stage/usr/local/sbin/wrenn-init"
touch -d "@$epoch" "$stage/usr/local/bin/envd" "$stage/usr/local/sbin/wrenn-init" \
	"$stage/usr/local/bin" "$stage/usr/local/sbin"

# Size: used blocks plus a quarter and 64 MiB for metadata and the journal.
# Sandboxes do not live in this headroom: each gets its own disk of its
# disk_mb size and wrenn-init grows the filesystem to fill it at boot.
used_kib=$(du -sk "$stage" | cut -f1)
files=$(find "$stage" | wc -l)
size_mib=$(((used_kib * 5 / 4 / 1024 + 64 + 3) / 4 * 4))
# -T default: without it mke2fs picks the "small" type (1 KiB blocks) for
# images under 512 MiB, and the block size stays when the guest grows the
# filesystem. -m 0: no blocks reserved for root in a single-user sandbox.
E2FSPROGS_FAKE_TIME=$epoch mkfs.ext4 -q -F -d "$stage" -L wrenn-root -U "$uuid" \
	-T default -b 4096 -I 256 -m 0 \
	-E "hash_seed=$uuid,root_owner=0:0,lazy_itable_init=0" \
	"$tmp" "${size_mib}M" >/dev/null
# mke2fs copies each file's atime and ctime from the host, where the hard
# links just made set every ctime to now and reads move atimes. Pin both to
# the epoch (mtimes are the tree's own, crtimes come from the fake time), so
# the same inputs give the same bytes.
if find "$stage" -mindepth 1 -printf '%P\n' | grep -q '"'; then
	log "a path in the tree contains a double quote: timestamps not pinned, image not reproducible"
else
	{
		printf 'sif / atime @%s\nsif / ctime @%s\n' "$epoch" "$epoch"
		find "$stage" -mindepth 1 -printf '%P\n' |
			awk -v t="$epoch" '{ printf "sif \"/%s\" atime @%s\nsif \"/%s\" ctime @%s\n", $0, t, $0, t }'
	} >"$stage.debugfs"
	errors=$(E2FSPROGS_FAKE_TIME=$epoch debugfs -w -f "$stage.debugfs" "$tmp" 2>&1 >/dev/null | grep -v '^debugfs [0-9]' || true)
	rm -f "$stage.debugfs"
	[ -z "$errors" ] || die "pinning timestamps with debugfs failed: $(printf '%s' "$errors" | head -n3)"
fi
mv -f "$tmp" "$image"
trap 'rm -rf "$stage"' EXIT
rm -rf "$stage"
trap - EXIT

size_bytes=$(stat -c %s "$image")
alloc_bytes=$(($(stat -c %b "$image") * $(stat -c %B "$image")))
build_ms=$((($(date +%s%N) - start_ns) / 1000000))

# envd's version as Go records it in the binary (never run it to ask: it
# would start serving).
envd_version=unknown
if command -v go >/dev/null; then
	envd_version=$(go version -m "$ENVD_BIN" 2>/dev/null | awk '$1 == "mod" { print $3; exit }' || true)
	rev=$(go version -m "$ENVD_BIN" 2>/dev/null | awk '$2 ~ /^vcs.revision=/ { sub("vcs.revision=", "", $2); print $2; exit }' || true)
	[ -z "$rev" ] || envd_version="$envd_version+${rev:0:12}"
	[ -n "$envd_version" ] || envd_version=unknown
fi

json_str() { printf '"%s"' "$(printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g')"; }
{
	printf '{\n'
	printf '  "template": %s,\n' "$(json_str "$template")"
	printf '  "image": "rootfs.ext4",\n'
	printf '  "size_bytes": %d,\n' "$size_bytes"
	printf '  "allocated_bytes": %d,\n' "$alloc_bytes"
	printf '  "files": %d,\n' "$files"
	printf '  "fs_uuid": %s,\n' "$(json_str "$uuid")"
	printf '  "built_at": %s,\n' "$(json_str "$(date -u +%Y-%m-%dT%H:%M:%SZ)")"
	printf '  "build_ms": %d,\n' "$build_ms"
	printf '  "inputs_hash": %s,\n' "$(json_str "$inputs_hash")"
	printf '  "inputs": {\n'
	printf '    "tree_key": %s,\n' "$(json_str "$key")"
	printf '    "suite": %s,\n' "$(json_str "$suite")"
	printf '    "mirror": %s,\n' "$(json_str "$mirror")"
	printf '    "debootstrap": %s,\n' "$(json_str "$debootstrap_version")"
	printf '    "envd_sha256": %s,\n' "$(json_str "$envd_sha")"
	printf '    "wrenn_init_sha256": %s,\n' "$(json_str "$init_sha")"
	printf '    "build_sh_sha256": %s\n' "$(json_str "$build_sha")"
	printf '  },\n'
	printf '  "envd": {"version": %s, "sha256": %s}\n' "$(json_str "$envd_version")" "$(json_str "$envd_sha")"
	printf '}\n'
} >"$out/.manifest.json.tmp"
mv -f "$out/.manifest.json.tmp" "$out/manifest.json"
# The stamp goes last: if anything above failed, the next run rebuilds.
printf '%s\n' "$inputs_hash" >"$out/.inputs.tmp"
mv -f "$out/.inputs.tmp" "$out/.inputs"

log "built $image in ${build_ms} ms: $((size_bytes / 1048576)) MiB filesystem, $((alloc_bytes / 1048576)) MiB allocated, $files files"
