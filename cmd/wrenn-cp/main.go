// Command wrenn-cp is the Wrenn control plane: REST and WebSocket API, auth,
// scheduling across hosts, and the sandbox proxy.
//
// Only --version works today; the API server lands with the control-plane
// issue (see docs/architecture.md for what exists).
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/wrenn/wrenn/internal/version"
)

func main() {
	showVersion := flag.Bool("version", false, "print the version and exit")
	flag.Parse()
	if *showVersion {
		fmt.Println("wrenn-cp", version.Version)
		return
	}
	fmt.Fprintln(os.Stderr, "wrenn-cp: the control plane is not built yet; see docs/architecture.md")
	os.Exit(2)
}
