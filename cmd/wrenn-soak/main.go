// Command wrenn-soak runs Wrenn under a long random mix of sandbox
// operations on a stack of its own and reports what it found (make soak;
// see internal/soak). It exits 1 when the soak found an unexpected error,
// a disagreement or a leak, and 2 when it could not run.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/wrenn/wrenn/internal/kernels"
	"github.com/wrenn/wrenn/internal/soak"
	"github.com/wrenn/wrenn/internal/testenv"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fs := flag.NewFlagSet("wrenn-soak", flag.ContinueOnError)
	duration := fs.Duration("duration", 30*time.Minute, "how long workers start new operations")
	workers := fs.Int("workers", 3, fmt.Sprintf("sandboxes worked on in parallel (1-%d; a fork takes one more VM, at most %d at once)", soak.MaxVMs, soak.MaxVMs))
	seed := fs.Uint64("seed", uint64(time.Now().UnixNano()), "seed of the operation plan (default: the time)")
	report := fs.String("report", "", "write the JSON report to this path")
	markdown := fs.String("markdown", "", "also write the markdown summary to this path")
	keep := fs.Bool("keep", false, "leave the stack up at the end")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "wrenn-soak takes no arguments, got %q\n", fs.Args())
		return 2
	}
	images, err := machineImages()
	if err != nil {
		fmt.Fprintf(os.Stderr, "wrenn-soak: %v\n", err)
		return 2
	}
	// The command in the report repeats the run: with the seed, chosen or not.
	command := append([]string{"wrenn-soak"}, args...)
	seedSet := false
	fs.Visit(func(f *flag.Flag) { seedSet = seedSet || f.Name == "seed" })
	if !seedSet {
		command = append(command, fmt.Sprintf("-seed=%d", *seed))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := soak.Run(ctx, soak.Config{
		Duration: *duration, Workers: *workers, Seed: *seed, Keep: *keep, Images: images,
		Command: strings.Join(command, " "),
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "wrenn-soak: %v\n", err)
		return 2
	}
	md := rep.Markdown()
	fmt.Print(md)
	code := 0
	if !rep.OK() {
		code = 1
	}
	if *report != "" {
		if err := rep.WriteJSON(*report); err != nil {
			fmt.Fprintf(os.Stderr, "wrenn-soak: %v\n", err)
			code = 2
		}
	}
	if *markdown != "" {
		if err := os.WriteFile(*markdown, []byte(md), 0o644); err != nil {
			fmt.Fprintf(os.Stderr, "wrenn-soak: write markdown: %v\n", err)
			code = 2
		}
	}
	return code
}

// machineImages finds the kernels and base image make images put in
// $WRENN_DIR (default /var/lib/wrenn), which the soak stack shares
// read-only.
func machineImages() (testenv.Images, error) {
	if os.Geteuid() != 0 {
		return testenv.Images{}, errors.New("needs root (it runs an agent and VMs)")
	}
	dir := testenv.Dir()
	k, err := kernels.Latest(filepath.Join(dir, "kernels"))
	if err != nil {
		return testenv.Images{}, fmt.Errorf("no guest kernel in %s (make images): %w", dir, err)
	}
	rootfs := filepath.Join(dir, "images", "minimal", "rootfs.ext4")
	if _, err := os.Stat(rootfs); err != nil {
		return testenv.Images{}, fmt.Errorf("no base image (make images): %w", err)
	}
	return testenv.Images{Dir: dir, Kernel: k, Rootfs: rootfs}, nil
}
