# Wrenn build entry points. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := build

WRENN_DIR   ?= /var/lib/wrenn
WRENN_CACHE ?= /var/cache/wrenn
export WRENN_DIR WRENN_CACHE

VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/wrenn/wrenn/internal/version.Version=$(VERSION)
GO      ?= go
BUILDS  := builds
# make install: PREFIX for the binaries, DESTDIR to stage into another root.
PREFIX  ?= /usr/local
DESTDIR ?=

# Guest binaries must be static: the rootfs has no matching libc guarantees.
GUEST_BINS := envd wrenn-init
HOST_BINS  := wrenn-cp wrenn-agent wrenn wrenn-up

.PHONY: help build web dev-frontend test-web generate check lint test test-short images kernel rootfs deps clean up dev dev-agent bench soak install

help:
	@echo "make up         one-box Wrenn: deps, build, images, PostgreSQL, control plane, agent (as root)"
	@echo "make dev        PostgreSQL + migrations + control plane only"
	@echo "make bench      performance report vs bare QEMU and gVisor (as root; BENCH_FLAGS=--quick for the short run)"
	@echo "make soak       random sandbox operations on a stack of its own for SOAK_DURATION (30m) with SOAK_WORKERS (3), then a leak check (as root; not in make test)"
	@echo "make dev-agent  the host agent alone, as root (REGISTER=<token> on first run)"
	@echo "make build      build the dashboard (web/) and $(HOST_BINS) $(GUEST_BINS) into $(BUILDS)/ (NO_WEBUI=1: without the dashboard)"
	@echo "make dev-frontend  the dashboard's Vite dev server on :5173 against a running control plane (WRENN_API_URL)"
	@echo "make test-web   the dashboard's type check and unit tests"
	@echo "make install    (as root, after make build) wrenn-cp, wrenn-agent, wrenn into $(PREFIX)/bin, their systemd units, /etc/wrenn/*.env (DESTDIR= to stage)"
	@echo "make images     build the guest kernel and the minimal rootfs (cached under $(WRENN_CACHE))"
	@echo "make test       install what is missing, build images, run every test (VM tests included)"
	@echo "make check      gofmt, go vet, staticcheck, then make test"
	@echo "make generate   regenerate code from proto/ (and later api/, db/)"

build: $(addprefix $(BUILDS)/,$(HOST_BINS) $(GUEST_BINS))

# The dashboard (web/, SvelteKit) is built into $(WEB_DIST) (git-ignored)
# and embedded in wrenn-cp by -tags webui. `make build NO_WEBUI=1` (or
# `go build ./cmd/wrenn-cp`) builds without it: wrenn-cp then serves a page
# saying how to build it. npm ci runs only when the lockfile changed.
WEB_DIST := internal/controlplane/webui/dist
WEB_DEPS := web/node_modules/.package-lock.json
ifeq ($(NO_WEBUI),)
CP_TAGS := -tags webui
CP_DEPS := web
endif

$(WEB_DEPS): web/package-lock.json web/package.json
	cd web && npm ci --no-audit --no-fund
	@touch $@

web: $(WEB_DEPS)
	cd web && npm run build

# Vite's dev server with hot reload on :5173, proxying the API and the
# terminal's WebSocket to a running control plane (WRENN_API_URL, default
# http://127.0.0.1:8000, e.g. from `make up` or `make dev`).
dev-frontend: $(WEB_DEPS)
	cd web && WRENN_API_URL=$${WRENN_API_URL:-http://127.0.0.1:8000} npm run dev

# The dashboard's unit tests (Vitest) and type check.
test-web: $(WEB_DEPS)
	cd web && npm run check && npm test

$(addprefix $(BUILDS)/,$(GUEST_BINS)): $(BUILDS)/%: FORCE
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $@ ./cmd/$*

$(addprefix $(BUILDS)/,$(filter-out wrenn-cp,$(HOST_BINS))): $(BUILDS)/%: FORCE
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $@ ./cmd/$*

$(BUILDS)/wrenn-cp: $(CP_DEPS) FORCE
	$(GO) build -trimpath $(CP_TAGS) -ldflags '$(LDFLAGS)' -o $@ ./cmd/wrenn-cp

FORCE:

up: deps build images
	$(BUILDS)/wrenn-up --dir $(WRENN_DIR)

bench: deps build images
	$(GO) run ./bench/wrennbench --bin-dir $(BUILDS) $(BENCH_FLAGS)

# The soak builds wrenn-cp and wrenn-agent into its own stack directory
# and shares the images of $(WRENN_DIR) read-only (make images first: it
# does not rebuild them, which would rewrite the base image under any
# other stack running on the machine). The report lands in builds/
# (SOAK_FLAGS=-keep leaves the stack up).
SOAK_DURATION ?= 30m
SOAK_WORKERS  ?= 3
soak:
	mkdir -p $(BUILDS)
	$(GO) run ./cmd/wrenn-soak -duration $(SOAK_DURATION) -workers $(SOAK_WORKERS) \
		-report $(BUILDS)/soak-report.json -markdown $(BUILDS)/soak-report.md $(SOAK_FLAGS)

dev: build
	$(BUILDS)/wrenn-up --dir $(WRENN_DIR) --no-agent

dev-agent: build
	WRENN_DIR=$(WRENN_DIR) $(BUILDS)/wrenn-agent $(if $(REGISTER),--register $(REGISTER) --address $${WRENN_HOST_LISTEN_ADDR:-127.0.0.1:50051})

generate:
	scripts/generate.sh

# Not dependent on build: `sudo make install` must not rebuild as root.
install:
	DESTDIR="$(DESTDIR)" PREFIX="$(PREFIX)" BUILDS="$(abspath $(BUILDS))" packaging/install.sh

deps:
	scripts/deps.sh

kernel: deps
	scripts/progress.sh kernel images/kernel/build.sh

rootfs: deps $(BUILDS)/envd $(BUILDS)/wrenn-init
	ENVD_BIN=$(abspath $(BUILDS)/envd) INIT_BIN=$(abspath $(BUILDS)/wrenn-init) scripts/progress.sh rootfs images/rootfs/build.sh

images: kernel rootfs

lint:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(GO) tool staticcheck ./...

test:
	scripts/test.sh

# Unit tests only: no root, no VMs, no images.
test-short:
	$(GO) test -short -race ./...

check: lint test

clean:
	rm -rf $(BUILDS)
