// Command wrenn-agent is the Wrenn host agent: it boots, pauses, snapshots and
// destroys microVM sandboxes on one host.
//
// Only --version works today; the daemon lands with the host-runtime
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
		fmt.Println("wrenn-agent", version.Version)
		return
	}
	fmt.Fprintln(os.Stderr, "wrenn-agent: the host agent daemon is not built yet; see docs/architecture.md")
	os.Exit(2)
}
