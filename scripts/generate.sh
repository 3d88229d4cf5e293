#!/usr/bin/env bash
# Regenerates every committed generated file from its source contract.
# Plugin versions are pinned by the `tool` block in go.mod.
set -euo pipefail
cd "$(dirname "$0")/.."

gen_go=$(go tool -n protoc-gen-go)
gen_connect=$(go tool -n protoc-gen-connect-go)

protos=$(find proto -name '*.proto' | sort)
protoc -I proto -I /usr/include \
	--plugin=protoc-gen-go="$gen_go" --plugin=protoc-gen-connect-go="$gen_connect" \
	--go_out=. --go_opt=module=github.com/wrenn/wrenn \
	--connect-go_out=. --connect-go_opt=module=github.com/wrenn/wrenn \
	$protos

# REST types from the OpenAPI document.
go tool oapi-codegen -config api/oapi-codegen.yaml api/openapi.yaml

# Typed queries from db/queries over the schema in db/migrations.
(cd db && go tool sqlc generate)
