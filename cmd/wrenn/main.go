// Command wrenn is the Wrenn command-line client for sandboxes, templates
// and hosts.
//
// Only --version works today; the commands land with the quick-start
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
		fmt.Println("wrenn", version.Version)
		return
	}
	fmt.Fprintln(os.Stderr, "wrenn: the CLI commands are not built yet; see docs/architecture.md")
	os.Exit(2)
}
