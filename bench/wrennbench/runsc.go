package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// runsc times gVisor's `runsc do /bin/true` from Debian's runsc package:
// a whole sandbox made, one process run in it and the sandbox torn down,
// the nearest gVisor has to "create, first exec". Without runsc the figure
// is skipped with the reason.
func (b *bench) runsc(ctx context.Context) {
	const key, name = "runsc-true", "gVisor `runsc do /bin/true` (create, run, destroy)"
	bin, err := exec.LookPath("runsc")
	if err != nil {
		b.add(GroupBaseline, skipped(key, name, "runsc is not installed (Debian package runsc; scripts/deps.sh)"))
		return
	}
	// A private state root, so that nothing of ours mixes with other runsc
	// users of the host; it goes with the work dir.
	root := filepath.Join(b.w.dir, "runsc")
	if err := os.MkdirAll(root, 0o700); err != nil {
		b.add(GroupBaseline, (&Figure{Key: key, Name: name}).failed(err))
		return
	}
	f := &Figure{Key: key, Name: name}
	// --network=none: runsc's default network sets up NAT with iptables,
	// which this host may lack; the guest process needs no network, and
	// Wrenn's figures that it is compared with include network set-up, so
	// this favours gVisor.
	args := []string{"--root", root, "--network=none", "do", "/bin/true"}
	b.measure(ctx, f, b.cfg.Samples, func(ctx context.Context) (time.Duration, error) {
		t := time.Now()
		out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
		d := time.Since(t)
		if err != nil {
			return 0, fmt.Errorf("%s %v: %w: %s", bin, args, err, out)
		}
		return d, nil
	})
	f.note("command: runsc %v (default platform of the packaged runsc; no network, see the code for why)", args)
	b.add(GroupBaseline, f)
}
