// Package version reports the build's version, stamped by the Makefile.
package version

// Version is set at link time with -X; "dev" for plain `go build`.
var Version = "dev"
