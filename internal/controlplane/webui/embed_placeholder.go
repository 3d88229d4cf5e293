//go:build !webui

package webui

import "embed"

// files is a one-page placeholder when wrenn-cp is built without the
// `webui` tag, so `go build ./...` and `go vet ./...` work on a fresh
// clone without Node. `make build` builds the app (web/) into dist/ and
// wrenn-cp with -tags webui, which embeds it instead (embed_dist.go).
//
//go:embed placeholder
var files embed.FS

const root = "placeholder"

// Built reports whether the real app is embedded.
const Built = false
