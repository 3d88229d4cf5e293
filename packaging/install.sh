#!/usr/bin/env bash
# Installs Wrenn's host daemons as systemd services: wrenn-cp, wrenn-agent
# and the wrenn CLI from $BUILDS, their units, and example settings in
# /etc/wrenn made from .env.example. Settings files that exist are never
# overwritten. `make install` runs it; DESTDIR installs into a staging tree
# (packages, tests) and then nothing outside it is touched.
#
# Environment: DESTDIR (staging root, default none), PREFIX (default
# /usr/local), BINDIR (default $PREFIX/bin), SYSCONFDIR (default /etc),
# UNITDIR (default /etc/systemd/system), BUILDS (default builds).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
DESTDIR=${DESTDIR:-}
PREFIX=${PREFIX:-/usr/local}
BINDIR=${BINDIR:-$PREFIX/bin}
SYSCONFDIR=${SYSCONFDIR:-/etc}
UNITDIR=${UNITDIR:-/etc/systemd/system}
BUILDS=${BUILDS:-$repo/builds}
confdir=$SYSCONFDIR/wrenn

bins=(wrenn-cp wrenn-agent wrenn)
for b in "${bins[@]}"; do
	if [[ ! -x $BUILDS/$b ]]; then
		echo "install: $BUILDS/$b is missing: run make build first" >&2
		exit 1
	fi
done

if [[ -z $DESTDIR && $(id -u) -ne 0 ]]; then
	echo "install: run as root (or set DESTDIR to stage the files)" >&2
	exit 1
fi

# section prints .env.example's "Shared" section and the one whose title
# starts with $1, under a header of its own.
section() {
	awk -v want="$1" '
		/^# -----------------------------/ { inhdr = !inhdr; next }
		inhdr { sec = substr($0, 3); next }
		sec == "Shared" || index(sec, want) == 1 { print }
	' "$repo/.env.example"
}

# envfile writes the settings file for daemon $1 (section title $2).
envfile() {
	local daemon=$1 title=$2
	cat <<HDR
# $daemon settings, read by $daemon.service (EnvironmentFile=$confdir/$daemon.env).
# Made from Wrenn's .env.example by make install; edit, then
# systemctl restart $daemon. KEY=VALUE lines, # comments; systemd reads
# them (quotes are removed, no \${expansion}). The environment beats
# defaults, and $daemon checks every value at start and names bad ones
# (journalctl -u $daemon).
HDR
	section "$title"
}

randhex() { head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n'; }

installed=()
kept=()

install -d -m 0755 "$DESTDIR$BINDIR" "$DESTDIR$UNITDIR"
install -d -m 0755 "$DESTDIR$confdir"
for b in "${bins[@]}"; do
	install -m 0755 "$BUILDS/$b" "$DESTDIR$BINDIR/$b"
	installed+=("$BINDIR/$b")
done
for u in wrenn-cp.service wrenn-agent.service; do
	sed -e "s|/usr/local/bin/|$BINDIR/|g" -e "s|/etc/wrenn/|$confdir/|g" "$here/systemd/$u" >"$DESTDIR$UNITDIR/$u.tmp"
	chmod 0644 "$DESTDIR$UNITDIR/$u.tmp"
	mv "$DESTDIR$UNITDIR/$u.tmp" "$DESTDIR$UNITDIR/$u"
	installed+=("$UNITDIR/$u")
done

for d in wrenn-cp:"Control plane" wrenn-agent:"Host agent"; do
	daemon=${d%%:*} title=${d#*:}
	dst=$DESTDIR$confdir/$daemon.env
	# The example is refreshed on every install, to show new settings.
	envfile "$daemon" "$title" >"$dst.example"
	chmod 0644 "$dst.example"
	installed+=("$confdir/$daemon.env.example")
	if [[ -e $dst ]]; then
		kept+=("$confdir/$daemon.env")
		continue
	fi
	# Secrets go in: readable by root only, made without a window.
	(
		umask 077
		if [[ $daemon == wrenn-cp ]]; then
			# A JWT secret of its own, so only DATABASE_URL is left to set.
			sed "s|^WRENN_JWT_SECRET=\$|WRENN_JWT_SECRET=$(randhex)|" "$dst.example" >"$dst.tmp"
		else
			cp "$dst.example" "$dst.tmp"
		fi
	)
	mv "$dst.tmp" "$dst"
	installed+=("$confdir/$daemon.env")
done

echo "Installed${DESTDIR:+ under $DESTDIR}:"
printf '  %s\n' "${installed[@]}"
if ((${#kept[@]})); then
	echo "Kept (already there; compare with the .example next to it):"
	printf '  %s\n' "${kept[@]}"
fi
cat <<NEXT

Next:
  1. PostgreSQL: create a role and a database, e.g.
       sudo -u postgres createuser --pwprompt wrenn
       sudo -u postgres createdb --owner wrenn wrenn
     and set DATABASE_URL in $confdir/wrenn-cp.env (WRENN_CP_URL too).
  2. systemctl daemon-reload && systemctl enable --now wrenn-cp
  3. Make the first platform admin:
       wrenn-cp admin --env-file $confdir/wrenn-cp.env --email EMAIL --password-file -
     add a host with its API key (wrenn host add --type regular) and put its one-time token
     in $confdir/wrenn-agent.env as WRENN_AGENT_REGISTRATION_TOKEN, with
     WRENN_AGENT_ADDRESS (host:port the control plane dials).
  4. systemctl enable --now wrenn-agent; once the journal says "registered
     with the control plane", empty WRENN_AGENT_REGISTRATION_TOKEN again
     (a restart with a used token fails).
  The agent also needs the guest images under WRENN_DIR (make images).
  docs/operations.md has the details.
NEXT
