#!/usr/bin/env bash
# progress.sh LABEL CMD...: runs CMD and, while it runs, prints a line with
# the elapsed time every 30 s, so long steps (the first kernel build takes
# about 20 CPU-minutes) show they are alive. Exits with CMD's status.
set -uo pipefail
label=$1
shift
start=$(date +%s)
"$@" &
pid=$!
trap 'kill "$pid" 2>/dev/null' INT TERM
while kill -0 "$pid" 2>/dev/null; do
	for _ in $(seq 30); do
		sleep 1
		kill -0 "$pid" 2>/dev/null || break
	done
	if kill -0 "$pid" 2>/dev/null; then
		e=$(($(date +%s) - start))
		printf '[%s] still working: %dm%02ds elapsed\n' "$label" $((e / 60)) $((e % 60)) >&2
	fi
done
wait "$pid"
