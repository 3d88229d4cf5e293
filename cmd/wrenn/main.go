// Command wrenn is the Wrenn command-line client for sandboxes, templates
// and hosts. The commands live in internal/cli; `wrenn --help` lists them.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/wrenn/wrenn/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Run(ctx, os.Args[1:], cli.Env{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv})
	stop()
	os.Exit(code)
}
