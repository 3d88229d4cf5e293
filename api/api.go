// Package api holds Wrenn's REST contract: the OpenAPI document (the one
// source) and the Go types generated from it, shared by the control plane,
// the CLI and the Go SDK.
package api

import _ "embed"

// OpenAPI is the document served at /openapi.yaml.
//
//go:embed openapi.yaml
var OpenAPI []byte
