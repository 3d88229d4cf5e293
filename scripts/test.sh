#!/usr/bin/env bash
# The README's test command (`make test`) and what CI runs: installs what is
# missing, builds the guest images (cached), then runs every Go test.
#
# As root with QEMU available, VM tests are required to run
# (WRENN_TEST_REQUIRE_VM=1): a missing prerequisite fails them instead of
# skipping silently. Elsewhere they skip and say why.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ]; then
	scripts/deps.sh
	make --no-print-directory images
	export WRENN_TEST_REQUIRE_VM=${WRENN_TEST_REQUIRE_VM:-1}
	# Control-plane tests start a private PostgreSQL cluster (internal/pgtest)
	# with the server deps.sh installed; missing, it is a failure, not a skip.
	export WRENN_TEST_REQUIRE_DB=${WRENN_TEST_REQUIRE_DB:-1}
else
	echo "test: not root: VM, network and cgroup tests will skip (each prints why)" >&2
fi

# The dashboard's type check and unit tests (Vitest). Its browser journey
# (tests/browser) is one of the Go packages below.
if command -v npm >/dev/null; then
	make --no-print-directory test-web
else
	echo "test: npm not found: the dashboard's unit tests are skipped" >&2
fi

# -p 1: one package at a time. Several packages boot VMs (TCG: CPU-bound),
# and on a 2-core machine running them side by side starves guests of CPU;
# the agent's fork test has failed only under such load (see the snapshot
# issue's note).
go test -race -p 1 -timeout 60m -count=1 "$@" ./...
